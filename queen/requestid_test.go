package queen

import (
	"net/http"
	"strings"
	"testing"

	"github.com/rbee-dev/rbee/internal/apikey"
)

// Every answer carries a correlation ID, the client's own when valid, and
// the queen's log line about a refused request names it.
func TestRequestIDCorrelatesAnswersAndLogs(t *testing.T) {
	k := newKeyedFixture(t, map[string]apikey.File{"alice": {}}, nil)
	send := func(id string) *http.Response {
		req, err := http.NewRequestWithContext(k.ctx(), http.MethodPost, k.http.URL+"/v1/completions",
			strings.NewReader(`{"model":"`+model+`","prompt":"x","temperature":9}`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+k.keys["alice"])
		if id != "" {
			req.Header.Set(HeaderRequestID, id)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if resp := send("client-chosen-1"); resp.StatusCode != http.StatusBadRequest || resp.Header.Get(HeaderRequestID) != "client-chosen-1" {
		t.Errorf("status %d, request ID %q, want 400 and the client's ID", resp.StatusCode, resp.Header.Get(HeaderRequestID))
	}
	if !strings.Contains(k.logs.String(), "request_id=client-chosen-1") {
		t.Error("the refusal's log line does not name the request ID")
	}
	for _, bad := range []string{"", "has spaces", strings.Repeat("x", 200)} {
		got := send(bad).Header.Get(HeaderRequestID)
		if got == "" || got == bad || strings.Contains(got, " ") {
			t.Errorf("request ID %q for a client's %q, want one of the queen's", got, bad)
		}
	}
}
