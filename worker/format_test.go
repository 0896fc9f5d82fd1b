package worker

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/schemas"
)

func TestCompileResponseFormat(t *testing.T) {
	schema := func(s string) *schemas.ResponseFormat {
		return &schemas.ResponseFormat{Type: schemas.FormatJSONSchema,
			JSONSchema: &schemas.JSONSchemaFormat{Name: "s", Schema: json.RawMessage(s)}}
	}
	for _, f := range []*schemas.ResponseFormat{nil, {Type: schemas.FormatText}} {
		if g, err := CompileResponseFormat(f); g != nil || err != nil {
			t.Errorf("%+v: got %v, %v; want no grammar", f, g, err)
		}
	}
	for _, f := range []*schemas.ResponseFormat{{Type: schemas.FormatJSONObject}, schema(`{"type":"object","properties":{"a":{"type":"string"}}}`)} {
		if g, err := CompileResponseFormat(f); g == nil || err != nil {
			t.Errorf("%+v: got %v, %v; want a grammar", f, g, err)
		}
	}
	for _, c := range []struct {
		f     *schemas.ResponseFormat
		code  schemas.Code
		names string
	}{
		{schema(`{"type":"string","pattern":"a+"}`), schemas.CodeUnsupportedSchema, `"pattern"`},
		{schema(`{"type":"strin"}`), schemas.CodeInvalidRequest, `"strin"`},
		{&schemas.ResponseFormat{Type: "yaml"}, schemas.CodeInvalidRequest, `"yaml"`},
	} {
		_, err := CompileResponseFormat(c.f)
		if schemas.CodeOf(err) != c.code || !strings.Contains(err.Error(), c.names) {
			t.Errorf("%+v: got %v, want %s naming %s", c.f, err, c.code, c.names)
		}
		if got := CheckResponseFormat(c.f); schemas.CodeOf(got) != c.code {
			t.Errorf("CheckResponseFormat: got %v, want %s", got, c.code)
		}
	}
}
