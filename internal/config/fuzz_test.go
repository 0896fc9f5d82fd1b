package config

import (
	"testing"
)

// A configuration file is outside data: any bytes decode into a config or
// an error, and a config that decodes validates or lists its problems,
// without a panic.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		"",
		"[queen]\nhttp = \"127.0.0.1:8080\"\n",
		"[log]\nlevel = \"debug\"\n[nats]\nurl = \"nats://127.0.0.1:4222\"\n",
		"[[hive.models]]\nname = \"m\"\npath = \"/m.gguf\"\nreplicas = 2\n",
		"[queen]\ndefault_timeout = \"-1s\"\n",
		"[hive]\nrestart = { max_restarts = -1 }\n",
		"x = [1, [2, [3]]]\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := Default()
		if err := Decode(data, &c); err != nil {
			return
		}
		_ = c.Validate()
		_, _ = c.TOML()
	})
}
