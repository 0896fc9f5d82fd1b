package config

import (
	"bytes"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/rbee-dev/rbee/schemas"
)

// ParseLevel reads a log level: debug, info, warn or error.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, schemas.Errorf(schemas.CodeInvalidRequest, "log level %q: want debug, info, warn or error", s)
}

// masked is what a set secret shows as.
const masked = "********"

// Masked is f with its secrets replaced by asterisks.
func (f File) Masked() File {
	v := reflect.ValueOf(&f).Elem()
	walk(v, "", func(path string, fv reflect.Value, sf reflect.StructField) {
		if sf.Tag.Get("secret") == "true" && fv.Kind() == reflect.String && fv.String() != "" {
			fv.SetString(masked)
		}
	})
	return f
}

// TOML is f as a configuration file, secrets masked.
func (f File) TOML() (string, error) {
	var b bytes.Buffer
	if err := toml.NewEncoder(&b).Encode(f.Masked()); err != nil {
		return "", fmt.Errorf("encode config: %w", err)
	}
	return b.String(), nil
}

// Change is one field that differs between two configurations.
type Change struct {
	Path     string
	Old, New string // secrets show as asterisks
}

func (c Change) String() string { return fmt.Sprintf("%s: %s -> %s", c.Path, c.Old, c.New) }

// Diff lists the fields that differ from old to new, secrets masked.
func Diff(old, new File) []Change {
	leaves := func(f File) map[string]string {
		out := map[string]string{}
		walk(reflect.ValueOf(&f).Elem(), "", func(path string, fv reflect.Value, sf reflect.StructField) {
			s := fmt.Sprint(fv.Interface())
			if fv.Kind() == reflect.String {
				s = fmt.Sprintf("%q", fv.String())
			}
			out[path] = s
		})
		return out
	}
	a, b := leaves(old), leaves(new)
	var ch []Change
	// Walk in declaration order, so that a diff reads like the file.
	walk(reflect.ValueOf(&new).Elem(), "", func(path string, fv reflect.Value, sf reflect.StructField) {
		o, had := a[path]
		if !had {
			// A new list entry: its unset fields say nothing.
			if fv.IsZero() {
				return
			}
			o = "(none)"
		}
		if o != b[path] {
			n := b[path]
			if sf.Tag.Get("secret") == "true" {
				o, n = secretShown(o), secretShown(n)
			}
			ch = append(ch, Change{path, o, n})
		}
	})
	var gone []string
	for path := range a {
		if _, ok := b[path]; !ok {
			gone = append(gone, path)
		}
	}
	slices.Sort(gone)
	for _, path := range gone {
		ch = append(ch, Change{path, a[path], "(removed)"})
	}
	return ch
}

func secretShown(quoted string) string {
	if quoted == `""` {
		return "(unset)"
	}
	return masked
}

// walk calls fn for every leaf field below v (a struct), with its dotted
// TOML path; the elements of slices of structs are paths of their own
// (hive.models[0].name), and other slices are leaves.
func walk(v reflect.Value, prefix string, fn func(path string, fv reflect.Value, sf reflect.StructField)) {
	t := v.Type()
	for i := range t.NumField() {
		sf := t.Field(i)
		name := sf.Tag.Get("toml")
		if name == "" || name == "-" {
			continue
		}
		path := name
		if prefix != "" {
			path = prefix + "." + name
		}
		fv := v.Field(i)
		switch {
		case fv.Kind() == reflect.Struct:
			walk(fv, path, fn)
		case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Struct:
			for j := range fv.Len() {
				walk(fv.Index(j), fmt.Sprintf("%s[%d]", path, j), fn)
			}
		default:
			fn(path, fv, sf)
		}
	}
}

// live are the paths whose fields carry live:"true".
var live = func() map[string]bool {
	m := map[string]bool{}
	f := Default()
	walk(reflect.ValueOf(&f).Elem(), "", func(path string, _ reflect.Value, sf reflect.StructField) {
		if sf.Tag.Get("live") == "true" {
			m[path] = true
		}
	})
	return m
}()

// Live tells whether a reload applies the field at path while the process
// runs; the others take effect at the next start. The models a hive serves
// are all live.
func Live(path string) bool {
	return live[path] || strings.HasPrefix(path, "hive.models[")
}
