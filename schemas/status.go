package schemas

import (
	"strings"
	"time"
)

// JobState is where a job stands, as its events tell. Every job that was
// accepted ends in exactly one of done, failed, cancelled or expired: the
// state of its one terminal event.
type JobState string

const (
	// JobRunning: events have begun and none ended them yet.
	JobRunning JobState = "running"
	JobDone    JobState = "done"
	// JobFailed: an error other than a cancel or a deadline ended it;
	// Error says which.
	JobFailed    JobState = "failed"
	JobCancelled JobState = "cancelled"
	// JobExpired: its deadline passed, queued or running.
	JobExpired JobState = "expired"
)

// JobStatus is a job's record as its events stream keeps it: what
// `rbee jobs show` prints and GET /v1/jobs/{id} answers.
type JobStatus struct {
	ID    string   `json:"id"`
	State JobState `json:"state"`
	// Owner is the queen (or client) whose subject the events are under.
	Owner string `json:"owner"`
	// WorkerID and Delivery are those of the newest event.
	WorkerID   string   `json:"worker_id,omitempty"`
	Delivery   int      `json:"delivery"`
	Events     int      `json:"events"`
	Tokens     int      `json:"tokens"`
	Text       string   `json:"text"`
	StopReason string   `json:"stop_reason,omitempty"`
	Usage      *Usage   `json:"usage,omitempty"`
	Timings    *Timings `json:"timings,omitempty"`
	Error      *Error   `json:"error,omitempty"`
	// Updated is when the newest event was stored.
	Updated time.Time `json:"updated"`
}

// Summarize makes the record of job id, owned by owner, from its events in
// order; updated is when the newest was stored.
func Summarize(id, owner string, events []Event, updated time.Time) JobStatus {
	st := JobStatus{ID: id, Owner: owner, State: JobRunning, Events: len(events), Updated: updated.UTC()}
	var text strings.Builder
	for _, ev := range events {
		st.WorkerID, st.Delivery = ev.WorkerID, ev.Delivery
		switch ev.Type {
		case EventToken:
			st.Tokens++
			text.WriteString(ev.Text)
		case EventEnd:
			st.State, st.StopReason, st.Usage, st.Timings = JobDone, ev.StopReason, ev.Usage, ev.Timings
		case EventError:
			st.Error = ev.Error
			switch ev.Error.Code {
			case CodeCancelled:
				st.State = JobCancelled
			case CodeDeadlineExceeded:
				st.State = JobExpired
			default:
				st.State = JobFailed
			}
		}
	}
	st.Text = text.String()
	return st
}
