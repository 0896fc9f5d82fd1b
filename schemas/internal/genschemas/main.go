// Command genschemas writes the JSON Schema files of rbee's wire messages.
// go generate runs it in the schemas directory:
//
//	go generate ./schemas
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/rbee-dev/rbee/schemas"
)

func main() {
	dir := flag.String("dir", "jsonschema", "directory to write the schema files to")
	flag.Parse()
	if err := write(*dir); err != nil {
		fmt.Fprintln(os.Stderr, "genschemas:", err)
		os.Exit(1)
	}
}

// write replaces the .json files in dir with the current schemas, removing
// those of messages that no longer exist.
func write(dir string) error {
	files, err := schemas.JSONSchemas()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	old, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return err
	}
	for _, path := range old {
		if _, ok := files[filepath.Base(path)]; !ok {
			if err := os.Remove(path); err != nil {
				return err
			}
		}
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
