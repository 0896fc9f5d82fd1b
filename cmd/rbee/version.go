package main

import (
	"context"
	"fmt"
	"io"
	"runtime/debug"
	"strings"
)

// version is set at link time (-ldflags "-X main.version=v1.2.3"); without
// it the module's version from the build info is shown.
var version = ""

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if err := parse(newFlags("version", stderr), args); err != nil {
		return err
	}
	_, err := io.WriteString(stdout, versionText())
	return err
}

// versionText is the version, the commit, the Go version and the build
// settings, from the binary's build info.
func versionText() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "rbee " + orUnknown(version) + " (no build info)\n"
	}
	v := version
	if v == "" {
		v = info.Main.Version
	}
	commit, when, dirty := "", "", false
	var flags []string
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			commit = s.Value
		case "vcs.time":
			when = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		default:
			if s.Value != "" {
				flags = append(flags, s.Key+"="+s.Value)
			}
		}
	}
	if dirty {
		commit += " (modified)"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "rbee %s\n", orUnknown(v))
	fmt.Fprintf(&b, "  commit: %s", orUnknown(commit))
	if when != "" {
		fmt.Fprintf(&b, " (%s)", when)
	}
	fmt.Fprintf(&b, "\n  go:     %s\n  build:  %s\n", info.GoVersion, strings.Join(flags, " "))
	return b.String()
}

func orUnknown(s string) string {
	if s == "" || s == "(devel)" {
		return "unknown (a development build)"
	}
	return s
}
