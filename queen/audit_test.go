package queen

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/internal/apikey"
	"github.com/rbee-dev/rbee/schemas"
)

// The queen's security-relevant events reach the audit trail in its own
// chain: refused credentials with the key's fingerprint (never the key),
// a model outside a key's scope, and each accepted job with its principal.
func TestQueenAuditsAuthAndJobs(t *testing.T) {
	k := newKeyedFixture(t, map[string]apikey.File{"alice": {}, "bob": {Models: []string{"other"}}}, nil)
	k.run()
	taken := k.startWorker(model, say("Hi"))
	wrong := apikey.Generate()
	send := func(key string) int {
		req, err := http.NewRequestWithContext(k.ctx(), http.MethodPost, "http://"+k.q.Addr()+"/v1/completions",
			strings.NewReader(`{"model":"`+model+`","prompt":"Once","max_tokens":2}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := send(wrong); got != http.StatusUnauthorized {
		t.Fatalf("wrong key: %d", got)
	}
	if got := send(k.keys["bob"]); got != http.StatusForbidden {
		t.Fatalf("bob outside his scope: %d", got)
	}
	if got := send(k.keys["alice"]); got != http.StatusOK {
		t.Fatalf("alice: %d", got)
	}
	job := recvJob(t, taken).Job

	var seen []string
	checkFor(t, func() error {
		seen = seen[:0]
		err := bus.AuditRecords(k.ctx(), k.js, k.subj, time.Time{}, func(rec bus.AuditRecord) error {
			if strings.Contains(string(rec.Body), k.keys["alice"]) || strings.Contains(string(rec.Body), wrong) {
				t.Errorf("an audit event holds a key: %s", rec.Body)
			}
			ev := rec.Event
			if ev.Component == "queen" && ev.Source == k.q.cfg.ID {
				seen = append(seen, fmt.Sprintf("%s %s %s %s %s", ev.Type, ev.Code, ev.Principal, ev.Fingerprint, ev.JobID))
			}
			return nil
		})
		if err != nil {
			return err
		}
		if len(seen) < 3 {
			return fmt.Errorf("queen's audit events %q, want 3", seen)
		}
		return nil
	})
	want := []string{
		fmt.Sprintf("%s %s  %s ", schemas.AuditAuthRefused, schemas.CodeInvalidAPIKey, apikey.Fingerprint(wrong)),
		fmt.Sprintf("%s %s bob %s ", schemas.AuditAuthRefused, schemas.CodeForbidden, apikey.Fingerprint(k.keys["bob"])),
		fmt.Sprintf("%s  alice  %s", schemas.AuditJobAccepted, job.ID),
	}
	for i := range want {
		if seen[i] != want[i] {
			t.Errorf("audit event %d: %q, want %q", i, seen[i], want[i])
		}
	}
	if report, err := bus.VerifyAudit(k.ctx(), k.js, k.subj); err != nil || !report.OK() {
		t.Errorf("verify: %+v, %v", report, err)
	}
}
