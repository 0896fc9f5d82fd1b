package schemas

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestResponseFormatValidate(t *testing.T) {
	schema := json.RawMessage(`{"type":"object"}`)
	valid := []*ResponseFormat{
		nil,
		{Type: FormatText},
		{Type: FormatJSONObject},
		{Type: FormatJSONSchema, JSONSchema: &JSONSchemaFormat{Name: "person_1", Schema: schema}},
		{Type: FormatJSONSchema, JSONSchema: &JSONSchemaFormat{Name: "p", Schema: json.RawMessage(`true`)}},
	}
	for _, f := range valid {
		if err := f.Validate(); err != nil {
			t.Errorf("%+v: %v", f, err)
		}
	}
	invalid := []struct {
		f    ResponseFormat
		want string
	}{
		{ResponseFormat{Type: "xml"}, `"xml"`},
		{ResponseFormat{Type: FormatJSONSchema}, "needs json_schema"},
		{ResponseFormat{Type: FormatJSONObject, JSONSchema: &JSONSchemaFormat{Name: "p", Schema: schema}}, "only for type"},
		{ResponseFormat{Type: FormatJSONSchema, JSONSchema: &JSONSchemaFormat{Name: "a b", Schema: schema}}, "name"},
		{ResponseFormat{Type: FormatJSONSchema, JSONSchema: &JSONSchemaFormat{Name: "p"}}, "missing"},
		{ResponseFormat{Type: FormatJSONSchema, JSONSchema: &JSONSchemaFormat{Name: "p", Schema: json.RawMessage(`{`)}}, "not valid JSON"},
		{ResponseFormat{Type: FormatJSONSchema, JSONSchema: &JSONSchemaFormat{Name: "p",
			Schema: json.RawMessage(`"` + strings.Repeat("x", MaxSchemaBytes) + `"`)}}, "limit"},
	}
	for _, c := range invalid {
		err := c.f.Validate()
		var e *Error
		if !errors.As(err, &e) || e.Code != CodeInvalidRequest || !strings.Contains(e.Message, c.want) {
			t.Errorf("%+v: got %v, want invalid_request naming %s", c.f, err, c.want)
		}
	}
	// A request's format travels in its job and is checked with it.
	r := InferRequest{Model: "m", Prompt: "p", ResponseFormat: &ResponseFormat{Type: "xml"}}
	if err := r.Validate(); CodeOf(err) != CodeInvalidRequest {
		t.Errorf("a request with a bad format: got %v", err)
	}
	r.ResponseFormat = valid[3]
	if j := r.Job("id", "s"); j.ResponseFormat != valid[3] {
		t.Errorf("the job lost the response format")
	}
	if CodeUnsupportedSchema.HTTPStatus() != 400 || CodeUnsupportedSchema.Retryable() {
		t.Errorf("unsupported_schema: status %d, retryable %v", CodeUnsupportedSchema.HTTPStatus(), CodeUnsupportedSchema.Retryable())
	}
}
