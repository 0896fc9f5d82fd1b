package queen

import (
	"bytes"
	"errors"
	"net/http"
	"testing"

	"github.com/rbee-dev/rbee/schemas"
)

// The OpenAI response_format travels in the job, on chat and completions.
func TestResponseFormatReachesTheJob(t *testing.T) {
	f := newFixture(t, nil)
	taken := f.startWorker(model, say(`{"a":1}`))
	for _, c := range []struct {
		path, body string
		want       *schemas.ResponseFormat
	}{
		{"/v1/chat/completions", `{"model":"stories260K","messages":[{"role":"user","content":"hi"}],
			"response_format":{"type":"json_schema","json_schema":{"name":"thing","strict":true,"schema":{"type":"object","properties":{"a":{"type":"integer"}}}}}}`,
			&schemas.ResponseFormat{Type: "json_schema", JSONSchema: &schemas.JSONSchemaFormat{Name: "thing", Strict: new(true),
				Schema: []byte(`{"type":"object","properties":{"a":{"type":"integer"}}}`)}}},
		{"/v1/completions", `{"model":"stories260K","prompt":"hi","response_format":{"type":"json_object"}}`,
			&schemas.ResponseFormat{Type: "json_object"}},
		{"/v1/chat/completions", `{"model":"stories260K","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"text"}}`, nil},
	} {
		resp, body := f.post(c.path, c.body)
		j := recvJob(t, taken)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d: %v", c.body, resp.StatusCode, body)
		}
		got := j.Job.ResponseFormat
		if (got == nil) != (c.want == nil) {
			t.Fatalf("%s: job's response format %+v, want %+v", c.body, got, c.want)
		}
		if got == nil {
			continue
		}
		if got.Type != c.want.Type || (got.JSONSchema == nil) != (c.want.JSONSchema == nil) {
			t.Errorf("%s: job's response format %+v, want %+v", c.body, got, c.want)
		}
		if s, w := got.JSONSchema, c.want.JSONSchema; s != nil && (s.Name != w.Name || !bytes.Equal(s.Schema, w.Schema) || s.Strict == nil || !*s.Strict) {
			t.Errorf("%s: json_schema %+v, want %+v", c.body, s, w)
		}
	}
}

// A schema the workers would refuse is a 400 before anything is queued, on
// HTTP and on the micro endpoint alike.
func TestUnsupportedSchemaRefusedBeforeQueueing(t *testing.T) {
	var checked int
	f := newFixture(t, func(c *Config) {
		c.CheckResponseFormat = func(rf *schemas.ResponseFormat) error {
			checked++
			if rf.JSONSchema != nil && bytes.Contains(rf.JSONSchema.Schema, []byte("pattern")) {
				return schemas.Wrap(schemas.CodeUnsupportedSchema, errors.New(`keyword "pattern" is not supported`))
			}
			return nil
		}
	})
	f.putWorker("w1", model, schemas.WorkerReady)
	for _, c := range []struct {
		body string
		code schemas.Code
	}{
		{`{"model":"stories260K","messages":[{"role":"user","content":"hi"}],
			"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"string","pattern":"a+"}}}}`, schemas.CodeUnsupportedSchema},
		{`{"model":"stories260K","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"xml"}}`, schemas.CodeInvalidRequest},
		{`{"model":"stories260K","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema"}}`, schemas.CodeInvalidRequest},
	} {
		resp, body := f.post("/v1/chat/completions", c.body)
		if resp.StatusCode != http.StatusBadRequest || errorCode(body) != string(c.code) {
			t.Errorf("%s: status %d, body %v; want 400 %s", c.body, resp.StatusCode, body, c.code)
		}
	}
	if checked != 1 {
		t.Errorf("the check ran %d times, want once: formats that fail validation never reach it", checked)
	}
	if n := f.jobsQueued(); n != 0 {
		t.Errorf("%d jobs queued, want none", n)
	}
}
