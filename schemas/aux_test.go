package schemas

import (
	"encoding/json"
	"strings"
	"testing"
)

func auxJob(a Aux) Job {
	return Job{ID: "job-1", Model: "m", Stream: "rbee.v2.stream.q1.job-1", Aux: a}
}

func TestAuxJobValidate(t *testing.T) {
	valid := []Job{
		auxJob(Aux{Kind: KindEmbed, Input: []string{"a", "b"}, Truncate: true}),
		func() Job {
			j := auxJob(Aux{Kind: KindTokenize, AddSpecial: true, WithPieces: true})
			j.Prompt = "hi"
			return j
		}(),
		auxJob(Aux{Kind: KindTokenize}), // an empty text has no tokens
		auxJob(Aux{Kind: KindDetokenize, Tokens: []int32{1, 2, 3}}),
		auxJob(Aux{Kind: KindDetokenize}),
		func() Job { j := validJob(); j.Kind = KindGenerate; return j }(),
	}
	for _, j := range valid {
		if err := j.Validate(); err != nil {
			t.Errorf("%+v: %v", j.Aux, err)
		}
	}
	withPrompt := func(j Job) Job { j.Prompt = "x"; return j }
	many := make([]string, MaxEmbedInputs+1)
	for i := range many {
		many[i] = "x"
	}
	invalid := []struct {
		job  Job
		want string
	}{
		{auxJob(Aux{Kind: "summarise"}), "kind"},
		{auxJob(Aux{Kind: KindEmbed}), "input is empty"},
		{auxJob(Aux{Kind: KindEmbed, Input: []string{"a", ""}}), "input[1] is empty"},
		{auxJob(Aux{Kind: KindEmbed, Input: many}), "limit 2048"},
		{auxJob(Aux{Kind: KindEmbed, Input: []string{strings.Repeat("x", MaxPromptBytes+1)}}), "bytes, limit"},
		{withPrompt(auxJob(Aux{Kind: KindEmbed, Input: []string{"a"}})), "not prompt"},
		{auxJob(Aux{Kind: KindEmbed, Input: []string{"a"}, WithPieces: true}), "not for an embed job"},
		{auxJob(Aux{Kind: KindTokenize, Tokens: []int32{1}}), "not for a tokenize job"},
		{auxJob(Aux{Kind: KindDetokenize, Tokens: []int32{1, -2}}), "tokens[1]"},
		{withPrompt(auxJob(Aux{Kind: KindDetokenize})), "not prompt"},
		{func() Job { j := validJob(); j.Input = []string{"a"}; return j }(), "embed, tokenize and detokenize kinds"},
	}
	for _, c := range invalid {
		err := c.job.Validate()
		if err == nil || CodeOf(err) != CodeInvalidRequest || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: err %v, want invalid_request containing %q", c.job.Aux, err, c.want)
		}
	}
}

func TestInferRequestCarriesAux(t *testing.T) {
	r := InferRequest{Model: "m", Aux: Aux{Kind: KindEmbed, Input: []string{"a"}}}
	if err := r.Validate(); err != nil {
		t.Fatal(err)
	}
	if j := r.Job("id", "s"); j.Kind != KindEmbed || len(j.Input) != 1 || j.Generates() {
		t.Errorf("job %+v: want the embed kind and its input", j.Aux)
	}
}

func TestAuxEndEventRoundTrip(t *testing.T) {
	ev := endEvent()
	ev.StopReason = StopReasonStop
	ev.Embeddings = [][]float32{{0.25, -0.5}, {1, 0}}
	ev.Tokens, ev.Pieces, ev.Content = []int32{1, 2}, []string{"a", " b"}, "a b"
	data, err := EncodeEvents([]Event{ev})
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEvents(nil, data)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := json.Marshal(got[0])
	b, _ := json.Marshal(ev)
	if string(a) != string(b) {
		t.Errorf("round trip: %s, want %s", a, b)
	}
}
