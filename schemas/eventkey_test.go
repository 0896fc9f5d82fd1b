package schemas

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestEventSignerAcceptsOnlyTheJobsOwnMessages(t *testing.T) {
	key := NewEventKey()
	s, err := key.EventSigner()
	if err != nil || s == nil {
		t.Fatalf("signer of a new key: %v, %v", s, err)
	}
	other, _ := NewEventKey().EventSigner()
	subject, data := "rbee.v2.stream.q1.job-1", []byte(`{"job_id":"job-1","seq":0,"type":"token","delivery":1,"token_id":5}`+"\n")
	mac := s.Sign(subject, data)
	if !s.Verify(subject, data, mac) {
		t.Fatal("the job's own signature does not verify")
	}
	flipped := bytes.Clone(data)
	flipped[len(flipped)-3] ^= 1
	for _, tc := range []struct {
		name         string
		signer       *EventSigner
		subject, mac string
		data         []byte
	}{
		{"no signature", s, subject, "", data},
		{"another job's key", other, subject, mac, data},
		{"a signature made with another key", s, subject, other.Sign(subject, data), data},
		{"another subject", s, "rbee.v2.stream.q1.job-2", mac, data},
		{"a changed body", s, subject, mac, flipped},
		{"the body moved into the subject", s, subject + "\x00" + string(data[:1]), mac, data[1:]},
		{"a truncated signature", s, subject, mac[:len(mac)-1], data},
		{"not base64", s, subject, "!" + mac[1:], data},
	} {
		if tc.signer.Verify(tc.subject, tc.data, tc.mac) {
			t.Errorf("%s: verified", tc.name)
		}
	}
	if a, b := NewEventKey(), NewEventKey(); a == b {
		t.Error("two new keys are equal")
	}
}

func TestJobEventKeyIsCheckedAndNeverPrinted(t *testing.T) {
	none, err := Secret("").EventSigner()
	if none != nil || err != nil {
		t.Errorf("no key: signer %v, %v; want none and no error", none, err)
	}
	short := base64.StdEncoding.EncodeToString(make([]byte, EventKeyBytes-1))
	for _, k := range []Secret{"not base64!", Secret(short), Secret(short + "AAAA")} {
		j := validJob()
		j.EventKey = k
		checkValidate(t, fmt.Sprintf("key %q", string(k)), &j, "event_key")
	}
	j := validJob()
	j.EventKey = NewEventKey()
	checkValidate(t, "a new key", &j, "")

	var logged bytes.Buffer
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("job", "key", j.EventKey)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("job", "key", j.EventKey, "job", j)
	printed := fmt.Sprintf("%v %+v %#v %s", j, j, j, j.EventKey) + logged.String()
	if strings.Contains(printed, string(j.EventKey)) {
		t.Errorf("the key is printed: %s", printed)
	}
	data, err := json.Marshal(j)
	if err != nil {
		t.Fatal(err)
	}
	var back Job
	if err := json.Unmarshal(data, &back); err != nil || back.EventKey != j.EventKey {
		t.Errorf("the key does not survive JSON: %q (%v), want %q", string(back.EventKey), err, string(j.EventKey))
	}
}
