package worker_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/schemas"
	"github.com/rbee-dev/rbee/worker"
)

// A job published straight onto the queue with a response format: the
// worker generates JSON that validates, and refuses a schema it cannot
// honour with unsupported_schema before generating anything.
func TestJobsWithResponseFormat(t *testing.T) {
	b := newBed(t)
	b.startWorker(t, worker.Config{ContextLength: 512})
	schema := `{"type":"object","properties":{"name":{"type":"string","maxLength":8},"ok":{"type":"boolean"}},"required":["name","ok"],"additionalProperties":false}`
	job := schemas.Job{ID: "job-json", Prompt: "Once upon a time", MaxTokens: 200, Sampling: greedy(),
		ResponseFormat: &schemas.ResponseFormat{Type: schemas.FormatJSONSchema,
			JSONSchema: &schemas.JSONSchemaFormat{Name: "thing", Schema: json.RawMessage(schema)}}}
	events := drain(t, b.submit(t, job))
	end := wantEnd(t, events)
	var text strings.Builder
	for _, ev := range events[:len(events)-1] {
		text.WriteString(ev.Text)
	}
	var v struct {
		Name *string `json:"name"`
		OK   *bool   `json:"ok"`
	}
	dec := json.NewDecoder(strings.NewReader(text.String()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil || v.Name == nil || v.OK == nil || len([]rune(*v.Name)) > 8 || end.StopReason != "stop" {
		t.Errorf("output %q (%s) does not validate: %v", text.String(), end.StopReason, err)
	}

	bad := job
	bad.ID = "job-bad-schema"
	bad.ResponseFormat = &schemas.ResponseFormat{Type: schemas.FormatJSONSchema,
		JSONSchema: &schemas.JSONSchemaFormat{Name: "x", Schema: json.RawMessage(`{"type":"integer","minimum":3}`)}}
	events = drain(t, b.submit(t, bad))
	wantError(t, events, schemas.CodeUnsupportedSchema)
	if len(events) != 1 || !strings.Contains(events[0].Error.Message, `"minimum"`) {
		t.Errorf("events %+v: want one error naming \"minimum\"", events)
	}
	b.waitQueueEmpty(t)
}
