package schemas

import (
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.FixedZone("x", 3600))
	tok := func(seq, delivery int, text string) Event {
		id := int32(seq)
		return Event{JobID: "j", Seq: seq, Type: EventToken, Delivery: delivery, WorkerID: "w" + string(rune('0'+delivery)), Text: text, TokenID: &id}
	}
	fail := func(seq int, code Code) Event {
		return Event{JobID: "j", Seq: seq, Type: EventError, Delivery: 2, WorkerID: "w2", Error: Errorf(code, "x")}
	}
	end := Event{JobID: "j", Seq: 2, Type: EventEnd, Delivery: 2, WorkerID: "w2", StopReason: StopReasonLength,
		Usage: &Usage{PromptTokens: 3, CompletionTokens: 2, TotalTokens: 5}}
	for _, tc := range []struct {
		name   string
		events []Event
		state  JobState
		tokens int
		text   string
	}{
		{"running", []Event{tok(0, 1, "Once")}, JobRunning, 1, "Once"},
		{"done after a takeover", []Event{tok(0, 1, "Once"), tok(1, 2, " upon"), end}, JobDone, 2, "Once upon"},
		{"cancelled", []Event{tok(0, 1, "Once"), fail(1, CodeCancelled)}, JobCancelled, 1, "Once"},
		{"expired queued", []Event{fail(0, CodeDeadlineExceeded)}, JobExpired, 0, ""},
		{"dead-lettered", []Event{fail(0, CodeDeadLettered)}, JobFailed, 0, ""},
		{"engine failure", []Event{fail(0, CodeEngineFailure)}, JobFailed, 0, ""},
	} {
		st := Summarize("j", "q1", tc.events, at)
		if st.State != tc.state || st.Tokens != tc.tokens || st.Text != tc.text || st.ID != "j" || st.Owner != "q1" ||
			st.Events != len(tc.events) || !st.Updated.Equal(at) || st.Updated.Location() != time.UTC {
			t.Errorf("%s: %+v", tc.name, st)
		}
		last := tc.events[len(tc.events)-1]
		if st.WorkerID != last.WorkerID || st.Delivery != last.Delivery {
			t.Errorf("%s: worker %s delivery %d, want the newest event's", tc.name, st.WorkerID, st.Delivery)
		}
		if (st.State == JobRunning || st.State == JobDone) != (st.Error == nil) {
			t.Errorf("%s: error %+v in state %s", tc.name, st.Error, st.State)
		}
	}
	if st := Summarize("j", "q1", []Event{tok(0, 1, "a"), end}, at); st.Usage.CompletionTokens != 2 || st.StopReason != StopReasonLength {
		t.Errorf("done: %+v", st)
	}
}
