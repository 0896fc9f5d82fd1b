package main

import (
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/lmittmann/tint"

	"github.com/rbee-dev/rbee/internal/config"
)

// newLogger writes tint's coloured lines to a terminal and JSON elsewhere,
// so logs stay readable by people and by log shippers.
func newLogger(w io.Writer, level string) *slog.Logger {
	lv := new(slog.LevelVar)
	if l, err := config.ParseLevel(level); err == nil {
		lv.Set(l)
	}
	return newLeveledLogger(w, lv)
}

// newLeveledLogger is newLogger with a level that can change while it
// logs: a configuration reload sets it.
func newLeveledLogger(w io.Writer, level slog.Leveler) *slog.Logger {
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			return slog.New(tint.NewHandler(w, &tint.Options{Level: level, TimeFormat: time.TimeOnly}))
		}
	}
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: level, ReplaceAttr: readableDuration}))
}

// readableDuration writes a duration as Go writes it ("1.5s"), where
// slog's JSON would write an integer of nanoseconds that nobody reads at
// a glance; tint's lines already show it so.
func readableDuration(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		a.Value = slog.StringValue(a.Value.Duration().String())
	}
	return a
}

// levelOf is a level variable set to f's log level.
func levelOf(f config.File) *slog.LevelVar {
	lv := new(slog.LevelVar)
	if l, err := config.ParseLevel(f.Log.Level); err == nil {
		lv.Set(l)
	}
	return lv
}
