package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
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

Formats: yaml (the file as sops -d prints it), json, env (KEY=value lines,
e.g. POSTGRES_URL=..., ready for ` + "`source`" + `). --store limits the output to one
store's section: minio, postgres, qdrant or redis.`,
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
	get.Flags().StringVar(&format, "format", "yaml", "yaml, json or env")
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
	return plain, nil
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
	var lines []string
	flatten(node, prefix, &lines)
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

// flatten renders a mapping as KEY=value lines, nested keys joined with
// "_", values single-quoted for the shell.
func flatten(n *yaml.Node, prefix string, out *[]string) {
	if n.Kind != yaml.MappingNode {
		*out = append(*out, strings.TrimSuffix(prefix, "_")+"="+shellQuote(n.Value))
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := strings.ToUpper(strings.NewReplacer("-", "_", ".", "_").Replace(n.Content[i].Value))
		flatten(n.Content[i+1], prefix+k+"_", out)
	}
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.:/@") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'"'"'`) + "'"
}
