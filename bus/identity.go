package bus

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/rbee-dev/rbee/schemas"
)

// Role is what a NATS identity is for. Each role has the least privilege
// its component needs (Permissions); the operator role has all, for people
// with the nats CLI.
type Role string

// The roles.
const (
	RoleQueen    Role = "queen"
	RoleHive     Role = "hive"
	RoleWorker   Role = "worker"
	RoleClient   Role = "client"
	RoleOperator Role = "operator"
)

// Roles lists every role, in the order rbee up writes their keys.
func Roles() []Role { return []Role{RoleQueen, RoleHive, RoleWorker, RoleClient, RoleOperator} }

// InboxPrefix is the inbox prefix a role's connections use: each role may
// subscribe to its own inboxes only, so that no client reads the replies
// another one asked for. The nats CLI takes it as --inbox-prefix.
func InboxPrefix(role Role) string { return "_INBOX_" + string(role) }

// Permissions are the publish and subscribe permissions of role under subj.
func Permissions(subj schemas.Subjects, role Role) *server.Permissions {
	p := cmp.Or(subj.Prefix, schemas.DefaultPrefix)
	base := p + "." + schemas.Version
	inbox := InboxPrefix(role) + ".>"
	jsInfo := []string{"$JS.API.INFO", "$JS.API.STREAM.INFO.>", "$JS.API.STREAM.NAMES", "$JS.API.STREAM.LIST"}
	// A KV bucket: reading one key, watching keys (an ordered consumer),
	// and for writers putting and deleting them.
	kvRead := func(bucket string) []string {
		s := "KV_" + bucket
		return []string{"$JS.API.DIRECT.GET." + s + ".>", "$JS.API.STREAM.MSG.GET." + s,
			"$JS.API.CONSUMER.CREATE." + s + ".>", "$JS.API.CONSUMER.DELETE." + s + ".>", "$JS.API.CONSUMER.INFO." + s + ".>"}
	}
	kvWrite := func(bucket string) []string { return []string{"$KV." + bucket + ".>"} }
	cat := func(lists ...[]string) []string { return slices.Concat(lists...) }
	// Service discovery: $SRV.PING, INFO and STATS, answered by services.
	discovery := []string{"$SRV.>"}

	switch role {
	case RoleWorker:
		jobs := subj.JobsStream()
		return &server.Permissions{
			Publish: &server.SubjectPermission{Allow: cat(jsInfo, kvRead(subj.CancelsBucket()), kvRead(subj.HivesBucket()),
				kvWrite(subj.WorkersBucket()), []string{
					"$JS.API.CONSUMER.INFO." + jobs + ".>",
					"$JS.API.CONSUMER.CREATE." + jobs + ".>",
					"$JS.API.CONSUMER.DURABLE.CREATE." + jobs + ".>",
					"$JS.API.CONSUMER.MSG.NEXT." + jobs + ".>",
					"$JS.ACK." + jobs + ".>",
					// Taking a job over reads the events it already has: the
					// last of its subject, and the ones before by sequence
					// (a request on the stream's own direct get subject).
					"$JS.API.DIRECT.GET." + subj.StreamsStream(),
					"$JS.API.DIRECT.GET." + subj.StreamsStream() + ".>",
					"$JS.API.STREAM.MSG.GET." + subj.StreamsStream(),
					subj.AllJobEvents(),
					subj.AllDeadLetters(),
					base + ".heartbeat.worker.>",
					base + ".progress.worker.>",
					base + ".audit.worker.>",
					// An auditor resumes its chain from its own last event; it
					// can read no other producer's.
					"$JS.API.DIRECT.GET." + subj.EventsStream() + "." + base + ".audit.worker.>",
				})},
			Subscribe: &server.SubjectPermission{Allow: []string{inbox, "$KV." + subj.CancelsBucket() + ".>",
				base + ".control.worker.>"}},
			// A reload asked on its control subject (rbee config reload
			// --worker) is answered to whoever asked.
			Response: &server.ResponsePermission{MaxMsgs: 1, Expires: time.Minute},
		}
	case RoleHive:
		return &server.Permissions{
			Publish: &server.SubjectPermission{Allow: cat(jsInfo, kvRead(subj.WorkersBucket()), kvRead(subj.HivesBucket()),
				kvWrite(subj.HivesBucket()), kvWrite(subj.WorkersBucket()), discovery, []string{
					base + ".heartbeat.hive.>",
					base + ".control.worker.>",
					base + ".audit.hive.>",
					"$JS.API.DIRECT.GET." + subj.EventsStream() + "." + base + ".audit.hive.>",
				})},
			Subscribe: &server.SubjectPermission{Allow: []string{inbox, base + ".control.hive.>", "$SRV.>",
				base + ".heartbeat.worker.>", base + ".progress.worker.>"}},
			// The control service answers whoever asked.
			Response: &server.ResponsePermission{MaxMsgs: 1, Expires: time.Minute},
		}
	case RoleClient:
		return &server.Permissions{
			// rbee models reads which models live workers and hives serve.
			Publish: &server.SubjectPermission{Allow: cat(discovery, kvWrite(subj.CancelsBucket()),
				kvRead(subj.WorkersBucket()), kvRead(subj.HivesBucket()), []string{
					subj.Infer(),
					"$JS.API.INFO",
					"$JS.API.STREAM.INFO.KV_" + subj.CancelsBucket(),
					"$JS.API.STREAM.INFO.KV_" + subj.WorkersBucket(),
					"$JS.API.STREAM.INFO.KV_" + subj.HivesBucket(),
				})},
			// A client may follow a worker's model load.
			Subscribe: &server.SubjectPermission{Allow: []string{inbox, base + ".progress.worker.>"}},
		}
	case RoleQueen:
		// The orchestrator reads and writes all of rbee's subjects and
		// streams and answers every client's inbox; it cannot speak as a
		// hive or worker in the audit trail, nor touch the system account.
		return &server.Permissions{
			Publish: &server.SubjectPermission{
				Allow: []string{p + ".>", "$JS.API.>", "$JS.ACK.>", "$KV.>", "$SRV.>", "_INBOX.>",
					InboxPrefix(RoleClient) + ".>", InboxPrefix(RoleOperator) + ".>", InboxPrefix(RoleHive) + ".>"},
				Deny: []string{base + ".audit.hive.>", base + ".audit.worker.>"},
			},
			Subscribe: &server.SubjectPermission{Allow: []string{p + ".>", inbox, "$KV.>", "$SRV.>"}},
		}
	default: // RoleOperator
		return &server.Permissions{
			Publish:   &server.SubjectPermission{Allow: []string{">"}},
			Subscribe: &server.SubjectPermission{Allow: []string{">"}},
		}
	}
}

// Identities are the nkeys of rbee's roles, one seed file per role in a
// directory: what rbee up configures its server with and hands to its
// components.
type Identities struct {
	Dir  string
	keys map[Role]string // public keys
}

// SeedFile is the path of role's nkey seed.
func (ids *Identities) SeedFile(role Role) string { return SeedPath(ids.Dir, role) }

// SeedPath is where LoadIdentities keeps role's seed in dir.
func SeedPath(dir string, role Role) string { return filepath.Join(dir, string(role)+".nk") }

// PublicKey is role's public nkey.
func (ids *Identities) PublicKey(role Role) string { return ids.keys[role] }

// LoadIdentities reads the seed files in dir, making the directory (0700)
// and any missing seed (0600) first: the same keys serve every start, so a
// worker still running from before a restart keeps its access. A seed
// file others may read is refused.
func LoadIdentities(dir string) (*Identities, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("nkeys directory: %w", err)
	}
	ids := &Identities{Dir: dir, keys: map[Role]string{}}
	for _, role := range Roles() {
		path := ids.SeedFile(role)
		seed, err := readSeed(path)
		if errors.Is(err, fs.ErrNotExist) {
			seed, err = writeSeed(path)
		}
		if err != nil {
			return nil, err
		}
		kp, err := nkeys.FromSeed(seed)
		if err != nil {
			return nil, fmt.Errorf("nkey %s: %w", path, err)
		}
		pub, err := kp.PublicKey()
		kp.Wipe()
		if err != nil {
			return nil, fmt.Errorf("nkey %s: %w", path, err)
		}
		ids.keys[role] = pub
	}
	return ids, nil
}

func readSeed(path string) ([]byte, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if info.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("nkey %s is readable by others (mode %v): run chmod 600 %s", path, info.Mode().Perm(), path)
	}
	seed, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("nkey %s: %w", path, err)
	}
	return seed, nil
}

func writeSeed(path string) ([]byte, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return nil, fmt.Errorf("new nkey: %w", err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return nil, fmt.Errorf("new nkey: %w", err)
	}
	// Wipe zeroes the key pair's own copy.
	seed = slices.Clone(seed)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, seed, 0o600); err != nil {
		return nil, fmt.Errorf("write nkey %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("write nkey %s: %w", path, err)
	}
	return seed, nil
}

// Users are the server's nkey users for these identities, each with its
// role's permissions under subj.
func (ids *Identities) Users(subj schemas.Subjects) []*server.NkeyUser {
	var users []*server.NkeyUser
	for _, role := range Roles() {
		users = append(users, &server.NkeyUser{Nkey: ids.keys[role], Permissions: Permissions(subj, role)})
	}
	return users
}

// Config is cfg connecting as role: its seed and its inbox prefix.
func (ids *Identities) Config(cfg Config, role Role) Config {
	cfg.NKey, cfg.InboxPrefix = ids.SeedFile(role), InboxPrefix(role)
	return cfg
}
