// Command gendoc writes docs/CONFIG.md from the configuration types:
// go generate ./internal/config.
package main

import (
	"fmt"
	"os"

	"github.com/rbee-dev/rbee/internal/config"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gendoc FILE")
		os.Exit(2)
	}
	if err := os.WriteFile(os.Args[1], []byte(config.Markdown()), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
