package schemas

import (
	"regexp"
	"strings"
	"testing"
)

func TestNewSubjects(t *testing.T) {
	for _, tc := range []struct {
		prefix, want string
		ok           bool
	}{
		{"", DefaultPrefix, true},
		{"rbee", "rbee", true},
		{"team-a_2", "team-a_2", true},
		{"a.b", "", false},
		{"a b", "", false},
		{"*", "", false},
		{">", "", false},
		{"rbee.", "", false},
		{"bée", "", false},
	} {
		s, err := NewSubjects(tc.prefix)
		if (err == nil) != tc.ok {
			t.Errorf("NewSubjects(%q) error %v, want ok=%v", tc.prefix, err, tc.ok)
			continue
		}
		if tc.ok && s.Prefix != tc.want {
			t.Errorf("NewSubjects(%q).Prefix = %q, want %q", tc.prefix, s.Prefix, tc.want)
		}
	}
}

func TestSubjectNames(t *testing.T) {
	def, _ := NewSubjects("")
	custom, _ := NewSubjects("team-a")
	for _, tc := range []struct {
		got, want string
	}{
		{def.Jobs("llama3:8b"), "rbee.v2.jobs.llama3:8b"},
		{def.AllJobs(), "rbee.v2.jobs.>"},
		{def.JobEvents("q1", "job-1"), "rbee.v2.stream.q1.job-1"},
		{def.OwnerEvents("q1"), "rbee.v2.stream.q1.>"},
		{def.JobEventsAnyOwner("job-1"), "rbee.v2.stream.*.job-1"},
		{def.AllJobEvents(), "rbee.v2.stream.>"},
		{def.CancelKey("job-1"), "$KV.RBEE_CANCELS.job-1"},
		{def.StreamsStream(), "RBEE_STREAMS"},
		{def.CancelsBucket(), "RBEE_CANCELS"},
		{def.Infer(), "rbee.v2.infer"},
		{def.Heartbeat(KindWorker, "w1"), "rbee.v2.heartbeat.worker.w1"},
		{def.AllHeartbeats(), "rbee.v2.heartbeat.>"},
		{def.Progress(KindWorker, "w1"), "rbee.v2.progress.worker.w1"},
		{def.AllProgress(KindWorker), "rbee.v2.progress.worker.>"},
		{def.Control(KindHive, "h1"), "rbee.v2.control.hive.h1"},
		{def.Audit("worker", "w1", "job.finished"), "rbee.v2.audit.worker.w1.job.finished"},
		{def.AuditType("job.finished"), "rbee.v2.audit.*.*.job.finished"},
		{def.AllAudit(), "rbee.v2.audit.>"},
		{def.JobsStream(), "RBEE_JOBS"},
		{def.EventsStream(), "RBEE_EVENTS"},
		{def.WorkersBucket(), "RBEE_WORKERS"},
		{def.JobsConsumer("llama3:8b"), "workers_llama3:8b"},
		{def.DeadLetters("llama3:8b"), "rbee.v2.dlq.llama3:8b"},
		{def.AllDeadLetters(), "rbee.v2.dlq.>"},
		{def.DeadLetterStream(), "RBEE_DLQ"},
		{def.HivesBucket(), "RBEE_HIVES"},
		{custom.Jobs("m"), "team-a.v2.jobs.m"},
		{custom.Infer(), "team-a.v2.infer"},
		{custom.JobsStream(), "TEAM_A_JOBS"},
		{custom.EventsStream(), "TEAM_A_EVENTS"},
		{custom.WorkersBucket(), "TEAM_A_WORKERS"},
		// The zero value behaves as the default prefix.
		{Subjects{}.Jobs("m"), "rbee.v2.jobs.m"},
		{Subjects{}.JobsStream(), "RBEE_JOBS"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}

// subjectMatches reports whether NATS delivers subject to a subscription
// on pattern.
func subjectMatches(pattern, subject string) bool {
	p, s := strings.Split(pattern, "."), strings.Split(subject, ".")
	for i, tok := range p {
		switch {
		case tok == ">":
			return len(s) > i
		case i >= len(s):
			return false
		case tok != "*" && tok != s[i]:
			return false
		}
	}
	return len(p) == len(s)
}

func TestSubjectsDoNotOverlap(t *testing.T) {
	s, _ := NewSubjects("")
	other, _ := NewSubjects("other")
	for _, tc := range []struct {
		pattern, subject string
		match            bool
	}{
		{s.AllJobs(), s.Jobs("llama3:8b"), true},
		{s.AllHeartbeats(), s.Heartbeat(KindWorker, "w1"), true},
		{s.AllProgress(KindWorker), s.Progress(KindWorker, "w1"), true},
		{s.AllProgress(KindHive), s.Progress(KindWorker, "w1"), false},
		// Progress is no heartbeat: what reads heartbeats never sees it.
		{s.AllHeartbeats(), s.Progress(KindWorker, "w1"), false},
		{s.AllJobs(), s.Progress(KindWorker, "w1"), false},
		{s.AllAudit(), s.Audit("hive", "h1", "x"), true},
		{s.AuditType("worker.started"), s.Audit("hive", "h1", "worker.started"), true},
		// Only jobs may land on the work queue.
		{s.AllJobs(), s.JobEvents("q1", "job-1"), false},
		{s.AllAudit(), s.JobEvents("q1", "job-1"), false},
		{s.AllJobEvents(), s.JobEvents("q1", "job-1"), true},
		{s.OwnerEvents("q1"), s.JobEvents("q1", "job-1"), true},
		{s.OwnerEvents("q2"), s.JobEvents("q1", "job-1"), false},
		{s.JobEventsAnyOwner("job-1"), s.JobEvents("q1", "job-1"), true},
		{s.JobEventsAnyOwner("job-2"), s.JobEvents("q1", "job-1"), false},
		{s.AllJobs(), s.Infer(), false},
		{s.AllJobs(), s.Audit("hive", "h1", "x"), false},
		{s.AllJobs(), s.Heartbeat(KindWorker, "w1"), false},
		{s.AllJobs(), s.Control(KindWorker, "w1"), false},
		{s.AllAudit(), s.Jobs("m"), false},
		// A dead letter never lands back on the work queue.
		{s.AllJobs(), s.DeadLetters("m"), false},
		{s.AllDeadLetters(), s.DeadLetters("m"), true},
		{s.AllDeadLetters(), s.Jobs("m"), false},
		// Installations under different prefixes stay apart.
		{s.AllJobs(), other.Jobs("m"), false},
	} {
		if got := subjectMatches(tc.pattern, tc.subject); got != tc.match {
			t.Errorf("%s matches %s: %v, want %v", tc.pattern, tc.subject, got, tc.match)
		}
	}
	// Stream, bucket and consumer names are single tokens JetStream accepts.
	for _, name := range []string{s.JobsStream(), s.EventsStream(), s.StreamsStream(), s.WorkersBucket(),
		s.CancelsBucket(), s.JobsConsumer("llama3:8b"), s.DeadLetterStream(), s.HivesBucket()} {
		if strings.ContainsAny(name, ". *>/\\\t\r\n") {
			t.Errorf("name %q is not a valid JetStream name", name)
		}
	}
}

func TestValidModelAndID(t *testing.T) {
	long := strings.Repeat("a", 128)
	for _, tc := range []struct {
		s         string
		model, id bool
	}{
		{"tiny", true, true},
		{"llama3:8b", true, false},
		{"Qwen2.5", false, false},
		{"a-b_c", true, true},
		{"0", true, true},
		{long, true, true},
		{long + "a", false, false},
		{"", false, false},
		{"-a", false, false},
		{"_a", false, false},
		{":a", false, false},
		{"a b", false, false},
		{"a*", false, false},
		{"a>", false, false},
		{"a/b", false, false},
		{"ü", false, false},
		{"a\n", false, false},
	} {
		if got := ValidModel(tc.s); got != tc.model {
			t.Errorf("ValidModel(%q) = %v, want %v", tc.s, got, tc.model)
		}
		if got := ValidID(tc.s); got != tc.id {
			t.Errorf("ValidID(%q) = %v, want %v", tc.s, got, tc.id)
		}
	}
}

func TestModelOfJobs(t *testing.T) {
	s, _ := NewSubjects("")
	for subject, want := range map[string]string{
		s.Jobs("llama3:8b"):      "llama3:8b",
		"rbee.v2.jobs.a.b":       "",
		"rbee.v2.jobs.":          "",
		"other.v2.jobs.m":        "",
		s.JobEvents("q1", "j"):   "",
		"rbee.v2.jobs.bad model": "",
	} {
		got, ok := s.ModelOfJobs(subject)
		if got != want && ok || ok != (want != "") {
			t.Errorf("ModelOfJobs(%q) = %q, %v; want %q", subject, got, ok, want)
		}
	}
}

func TestIsJobEvents(t *testing.T) {
	s, _ := NewSubjects("")
	for subject, want := range map[string]bool{
		s.JobEvents("q1", "job-1"):   true,
		"rbee.v2.stream.q1":          false,
		"rbee.v2.stream.q1.job.x":    false,
		"rbee.v2.stream.q1.*":        false,
		"rbee.v2.stream.>":           false,
		"other.v2.stream.q1.job-1":   false,
		"_INBOX.abc":                 false,
		"rbee.v2.heartbeat.worker.w": false,
	} {
		if got := s.IsJobEvents(subject); got != want {
			t.Errorf("IsJobEvents(%q) = %v, want %v", subject, got, want)
		}
	}
}

// FuzzValidModelAndID holds the written-out checks to the patterns they
// spell.
func FuzzValidModelAndID(f *testing.F) {
	model := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_:-]{0,127}$`)
	id := regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)
	for _, s := range []string{"", "a", "llama3:8b", "_a", "a.b", "a b", "é", "a\x00", strings.Repeat("a", 128), strings.Repeat("a", 129), "a-b_c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidModel(s), model.MatchString(s); got != want {
			t.Errorf("ValidModel(%q) = %v, the pattern says %v", s, got, want)
		}
		if got, want := ValidID(s), id.MatchString(s); got != want {
			t.Errorf("ValidID(%q) = %v, the pattern says %v", s, got, want)
		}
	})
}
