package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/getsops/sops/v3/cmd/sops/formats"
	"github.com/getsops/sops/v3/decrypt"
	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/tenantprov/tenantprov/pkg/events"
)

func newSecretsCmd(g *globals) *cobra.Command {
	secrets := &cobra.Command{Use: "secrets", Short: "Read a tenant's sealed secrets"}
	var store, format, identity string
	get := &cobra.Command{
		Use:   "get <tenant-id>",
		Short: "Decrypt a tenant's secrets file with your operator age key",
		Long: `secrets get fetches tenant-secrets/<id>.sops.yaml, checks it against the
SHA-256 in the tenant's record, and decrypts it with SOPS using your
operator age identity (--identity, or SOPS_AGE_KEY_FILE / SOPS_AGE_KEY as
sops itself reads them). Nothing is written to disk.

The file must name the tenant and generation of the registry record;
anything else is refused.

Formats: yaml (the file as sops -d prints it), json, env (NAME='value'
lines, e.g. POSTGRES_URL='...', every value single-quoted so that the
output is safe to eval whatever the file holds; a key that cannot be a
shell variable name is an error). --store limits the output to one
store's section: minio, postgres, qdrant or redis.

The output is the file itself, not a document about it: -o json makes json
the default --format (an explicit --format wins), and errors are then JSON
on stderr; no error ever quotes a secret value.`,
		Example: "  tenantctl secrets get acme\n  tenantctl secrets get acme --store postgres --format env\n  eval \"$(tenantctl secrets get acme --store redis --format env)\"",
		Args:    exactID("secrets get"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := parseID(args[0])
			if err != nil {
				return err
			}
			if store != "" {
				if _, err := events.ParseStore(store); err != nil {
					return fail(exitUsage, "--store: %v", err)
				}
			}
			// The output is the secrets file itself: -o json picks the
			// json format unless --format names one.
			if g.json && !cmd.Flags().Changed("format") {
				format = "json"
			}
			switch format {
			case "yaml", "json", "env":
			default:
				return fail(exitUsage, "--format %q: want yaml, json or env", format)
			}
			if identity != "" {
				if err := os.Setenv("SOPS_AGE_KEY_FILE", identity); err != nil {
					return fail(exitFailed, "%v", err)
				}
			}
			if os.Getenv("SOPS_AGE_KEY_FILE") == "" && os.Getenv("SOPS_AGE_KEY") == "" {
				return fail(exitUsage, "no operator key: pass --identity or set SOPS_AGE_KEY_FILE (make up writes it to .dev/env)")
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), g.timeout)
			defer cancel()
			plain, err := g.decryptSecrets(ctx, string(id))
			if err != nil {
				return err
			}
			defer clear(plain)
			return writeSecrets(g, plain, store, format)
		},
	}
	get.Flags().StringVar(&store, "store", "", "only this store's section: minio, postgres, qdrant, redis")
	get.Flags().StringVar(&format, "format", "yaml", "yaml, json or env (default yaml; json with -o json)")
	get.Flags().StringVar(&identity, "identity", "", "operator age identity file (default: SOPS_AGE_KEY_FILE)")
	secrets.AddCommand(get)
	return secrets
}

func (g *globals) decryptSecrets(ctx context.Context, id string) ([]byte, error) {
	c, err := g.connect(ctx)
	if err != nil {
		return nil, err
	}
	defer c.close()
	rec, _, err := c.record(ctx, id)
	if err != nil {
		return nil, err
	}
	if rec.Secrets == nil {
		return nil, fail(exitNotFound, "tenant %s (%s) has no sealed secrets", id, rec.State)
	}
	obj, err := c.js.ObjectStore(ctx, rec.Secrets.Bucket)
	if err != nil {
		return nil, fail(exitUnavailable, "open object store %s: %v", rec.Secrets.Bucket, err)
	}
	sealed, err := obj.GetBytes(ctx, rec.Secrets.Object)
	if err != nil {
		return nil, fail(exitNotFound, "read %s/%s: %v", rec.Secrets.Bucket, rec.Secrets.Object, err)
	}
	sum := sha256.Sum256(sealed)
	if got := hex.EncodeToString(sum[:]); got != rec.Secrets.SHA256 {
		return nil, fail(exitFailed, "sealed secrets of %s do not match the record (sha256 %s, record says %s): refusing to use them", id, got, rec.Secrets.SHA256)
	}
	plain, err := decrypt.DataWithFormat(sealed, formats.Yaml)
	if err != nil {
		return nil, fail(exitFailed, "decrypt %s: %v (is your operator key among the file's recipients?)", rec.Secrets.Object, err)
	}
	if err := matchRecord(plain, rec); err != nil {
		clear(plain)
		return nil, err
	}
	return plain, nil
}

// matchRecord refuses a decrypted file that is not the one the registry
// record describes: its tenant_id and generation must be the record's (a
// file of another tenant, or of an older generation, matched by SHA-256
// only because the record points at it, must never be handed out).
func matchRecord(plain []byte, rec *events.TenantRecord) error {
	var head struct {
		TenantID   string `yaml:"tenant_id"`
		Generation uint64 `yaml:"generation"`
	}
	if err := yaml.Unmarshal(plain, &head); err != nil {
		return fail(exitFailed, "decrypted secrets of %s are not a secrets file (tenant_id, generation)", rec.TenantID)
	}
	if head.TenantID != rec.TenantID || head.Generation != rec.Generation {
		return fail(exitFailed, "sealed secrets name tenant %q generation %d, but the registry record is tenant %q generation %d: refusing to use them",
			events.Truncate(head.TenantID, 64), head.Generation, rec.TenantID, rec.Generation)
	}
	return nil
}

func writeSecrets(g *globals, plain []byte, store, format string) error {
	var doc yaml.Node
	if err := yaml.Unmarshal(plain, &doc); err != nil || len(doc.Content) == 0 {
		return fail(exitFailed, "decrypted secrets are not YAML")
	}
	node := doc.Content[0]
	prefix := ""
	if store != "" {
		node = lookup(node, store)
		if node == nil {
			return fail(exitNotFound, "no %s section in the secrets file", store)
		}
		prefix = strings.ToUpper(store) + "_"
	}
	switch format {
	case "yaml":
		out, err := yaml.Marshal(node)
		if err != nil {
			return fail(exitFailed, "render: %v", err)
		}
		_, err = g.stdout.Write(out)
		return err
	case "json":
		var v any
		if err := node.Decode(&v); err != nil {
			return fail(exitFailed, "render: %v", err)
		}
		enc := json.NewEncoder(g.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
	lines, err := envLines(node, prefix)
	if err != nil {
		return err
	}
	for _, l := range lines {
		fmt.Fprintln(g.stdout, l)
	}
	return nil
}

func lookup(m *yaml.Node, key string) *yaml.Node {
	if m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// envName is what a shell variable name from the secrets file may be.
var envName = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`)

// envLines renders a mapping as NAME='value' lines that are safe to eval in
// any POSIX shell whatever the file holds: nested keys are joined with "_"
// and upper-cased ("-" and "." become "_"); a name that is then not
// [A-Z_][A-Z0-9_]*, or that two keys share, is an error, as is a value
// that is not a scalar or holds a NUL byte; every value is single-quoted
// (see shellQuote). The error names no value.
func envLines(n *yaml.Node, prefix string) ([]string, error) {
	var lines []string
	seen := map[string]bool{}
	var walk func(n *yaml.Node, prefix string) error
	walk = func(n *yaml.Node, prefix string) error {
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(n.Content[i].Value))
				if err := walk(n.Content[i+1], prefix+k+"_"); err != nil {
					return err
				}
			}
			return nil
		case yaml.ScalarNode:
			name := strings.TrimSuffix(prefix, "_")
			if !envName.MatchString(name) {
				return fail(exitFailed, "secrets file key %s cannot be a shell variable name (want [A-Z_][A-Z0-9_]*): refusing --format env", strconv.QuoteToASCII(events.Truncate(name, 64)))
			}
			if seen[name] {
				return fail(exitFailed, "secrets file has two keys that both become %s: refusing --format env", name)
			}
			seen[name] = true
			if strings.ContainsRune(n.Value, 0) {
				return fail(exitFailed, "secrets file value of %s holds a NUL byte, which no shell variable can: refusing --format env", name)
			}
			lines = append(lines, name+"="+shellQuote(n.Value))
			return nil
		}
		return fail(exitFailed, "secrets file entry %s is not a value or a mapping: refusing --format env", strconv.QuoteToASCII(events.Truncate(strings.TrimSuffix(prefix, "_"), 64)))
	}
	if err := walk(n, prefix); err != nil {
		return nil, err
	}
	return lines, nil
}

// shellQuote single-quotes s for a POSIX shell: inside single quotes
// nothing is special but the quote itself, so each embedded quote closes
// the quoted string, adds an escaped quote and opens a new one.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
