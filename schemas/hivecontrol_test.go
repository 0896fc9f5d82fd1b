package schemas

import (
	"strings"
	"testing"
)

func TestHiveControlValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		v    interface{ Validate() error }
		ok   bool
	}{
		{"spawn", &SpawnRequest{Model: "llama3:8b"}, true},
		{"spawn without model", &SpawnRequest{}, false},
		{"spawn with a subject token", &SpawnRequest{Model: "a.b"}, false},
		{"stop", &StopRequest{WorkerID: "h1-tiny-0"}, true},
		{"stop without worker", &StopRequest{}, false},
		{"stop with wildcard", &StopRequest{WorkerID: "*"}, false},
		{"drain", &DrainRequest{Reason: "maintenance"}, true},
		{"drain with two lines", &DrainRequest{Reason: "a\nb"}, false},
		{"shutdown", &ShutdownRequest{}, true},
		{"shutdown with a long reason", &ShutdownRequest{Reason: strings.Repeat("x", maxReason+1)}, false},
	} {
		err := tc.v.Validate()
		if tc.ok != (err == nil) {
			t.Errorf("%s: Validate() = %v, want ok %v", tc.name, err, tc.ok)
		}
		if err != nil && CodeOf(err) != CodeInvalidRequest {
			t.Errorf("%s: code %s, want %s", tc.name, CodeOf(err), CodeInvalidRequest)
		}
	}
}

func TestPreflightCodes(t *testing.T) {
	for _, c := range []Code{CodeInsufficientRAM, CodeInsufficientVRAM, CodeInsufficientDisk, CodeTooManyWorkers} {
		if !c.Retryable() {
			t.Errorf("%s is not retryable; another hive may have room", c)
		}
		if s := c.HTTPStatus(); s != 507 && s != 503 {
			t.Errorf("%s: HTTP %d, want 507 or 503", c, s)
		}
	}
}

func TestHiveControlSubjects(t *testing.T) {
	s, err := NewSubjects("rbee")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.HiveControl("h1", HiveSpawn), "rbee.v2.control.hive.h1.spawn"; got != want {
		t.Errorf("HiveControl = %q, want %q", got, want)
	}
}
