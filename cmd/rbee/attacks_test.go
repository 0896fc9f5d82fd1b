package main

import (
	"errors"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// The attacks an anonymous NATS connection could carry out against rbee up
// before it had identities, tried again: each is refused by the server, and
// rbee up goes on answering.
func TestBusAttacksOnUpAreRefused(t *testing.T) {
	up := startUp(t)
	subj, _ := schemas.NewSubjects("")
	host, _ := os.Hostname()

	if nc, err := nats.Connect(up.natsURL, nats.MaxReconnects(0)); err == nil {
		nc.Close()
		t.Fatal("an anonymous connection was accepted")
	}

	var mu sync.Mutex
	var violations []string
	opt, err := nats.NkeyOptionFromSeed(bus.SeedPath(defaultNKeysDir(), bus.RoleClient))
	if err != nil {
		t.Fatal(err)
	}
	client, err := nats.Connect(up.natsURL, opt, nats.CustomInboxPrefix(bus.InboxPrefix(bus.RoleClient)),
		nats.PermissionErrOnSubscribe(true),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			mu.Lock()
			violations = append(violations, err.Error())
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	// Reading every prompt and answer.
	for _, subject := range []string{">", subj.AllJobEvents(), "_INBOX.>", bus.InboxPrefix(bus.RoleQueen) + ".>"} {
		sub, err := client.SubscribeSync(subject)
		if err == nil {
			_, err = sub.NextMsg(2 * time.Second)
		}
		if !errors.Is(err, nats.ErrPermissionViolation) {
			t.Errorf("client subscribing to %s: %v, want a permissions violation", subject, err)
		}
	}
	// Injecting text into a job's stream, queueing a job that names any
	// subject, and stopping everything with one control message.
	for _, subject := range []string{
		subj.JobEvents("queen-x", "job-1"),
		subj.Jobs("stories260K"),
		subj.HiveControl(hiveID(host), "shutdown"),
		subj.Control(schemas.KindHive, hiveID(host)),
	} {
		if err := client.Publish(subject, []byte(`{"command":"shutdown"}`)); err != nil {
			t.Fatal(err)
		}
		poll(t, 5*time.Second, func() error {
			mu.Lock()
			defer mu.Unlock()
			for _, v := range violations {
				if strings.Contains(v, `"`+subject+`"`) {
					return nil
				}
			}
			return errors.New("no permissions violation for " + subject)
		})
	}

	// rbee up still serves.
	resp := postJSON(t, "http://"+up.httpAddr+"/v1/completions", map[string]any{
		"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 4})
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("completion after the attacks: %d", resp.StatusCode)
	}
}
