package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/rbee-dev/rbee/bus"
	"github.com/rbee-dev/rbee/schemas"
)

// runNATSConfig prints the authorization block of a nats-server
// configuration that gives rbee's identities (made in --nkeys-dir if
// missing) the permissions rbee up gives them: the same least privilege on
// an external server or cluster.
func runNATSConfig(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("nats-config", stderr)
	dir := fs.String("nkeys-dir", defaultNKeysDir(), "where the identities' nkey seeds are kept; missing ones are made (env RBEE_NKEYS_DIR)")
	prefix := fs.String("prefix", cmp.Or(os.Getenv("RBEE_PREFIX"), schemas.DefaultPrefix), "subject prefix (env RBEE_PREFIX)")
	if err := parse(fs, args); err != nil {
		return err
	}
	subj, err := schemas.NewSubjects(*prefix)
	if err != nil {
		return usageError{err}
	}
	ids, err := bus.LoadIdentities(*dir)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, natsServerAuthorization(ids, subj))
	return nil
}

// natsServerAuthorization renders ids' users in nats-server's
// configuration syntax.
func natsServerAuthorization(ids *bus.Identities, subj schemas.Subjects) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# rbee's NATS identities (rbee nats-config): each part connects with its seed in %s\n", ids.Dir)
	b.WriteString("# and may do only what it needs. Include this in the server's configuration.\n")
	b.WriteString("authorization {\n  users = [\n")
	for _, role := range bus.Roles() {
		p := bus.Permissions(subj, role)
		fmt.Fprintf(&b, "    # %s (inbox prefix %s)\n", role, bus.InboxPrefix(role))
		fmt.Fprintf(&b, "    {\n      nkey: %s\n      permissions: {\n", ids.PublicKey(role))
		writeSubjectPermission(&b, "publish", p.Publish)
		writeSubjectPermission(&b, "subscribe", p.Subscribe)
		if r := p.Response; r != nil {
			fmt.Fprintf(&b, "        allow_responses: { max: %d, expires: %q }\n", r.MaxMsgs, r.Expires.String())
		}
		b.WriteString("      }\n    }\n")
	}
	b.WriteString("  ]\n}\n")
	return b.String()
}

func writeSubjectPermission(b *strings.Builder, name string, p *server.SubjectPermission) {
	if p == nil {
		return
	}
	quote := func(list []string) string {
		q := make([]string, len(list))
		for i, s := range list {
			q[i] = strconv.Quote(s)
		}
		return "[" + strings.Join(q, ", ") + "]"
	}
	fmt.Fprintf(b, "        %s: {\n", name)
	if len(p.Allow) > 0 {
		fmt.Fprintf(b, "          allow: %s\n", quote(p.Allow))
	}
	if len(p.Deny) > 0 {
		fmt.Fprintf(b, "          deny: %s\n", quote(p.Deny))
	}
	b.WriteString("        }\n")
}
