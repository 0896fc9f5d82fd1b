package schemas

import (
	"os"
	"strings"
	"testing"
)

// Every code an operator can meet is explained in the troubleshooting
// guide: its cause and its fix.
func TestEveryCodeIsInTroubleshooting(t *testing.T) {
	doc, err := os.ReadFile("../docs/TROUBLESHOOTING.md")
	if err != nil {
		t.Fatal(err)
	}
	for code, status := range httpStatus {
		if !strings.Contains(string(doc), "\n### `"+string(code)+"`\n") {
			t.Errorf("code %s (HTTP %d) has no section in docs/TROUBLESHOOTING.md", code, status)
		}
	}
}
