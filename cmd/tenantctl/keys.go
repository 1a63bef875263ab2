package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"filippo.io/age"
	"github.com/spf13/cobra"
)

func newKeysCmd(g *globals) *cobra.Command {
	keys := &cobra.Command{Use: "keys", Short: "Manage the age keys that seal tenant credentials"}
	var dir string
	var force bool
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create the control-plane key pair and an operator key pair",
		Long: `keys init writes two age identities (mode 0600) into --dir:

  control-plane.agekey  the orchestrator's key: agents encrypt credentials to
                        its recipient, and it opens them to seal the secrets
                        file. Give the recipient to every agent
                        (CONTROL_PLANE_RECIPIENT) and the file to the
                        orchestrator (CONTROL_PLANE_IDENTITY_FILE).
  operator.agekey       an operator's key: add its recipient to the
                        orchestrator's OPERATOR_RECIPIENTS and point
                        SOPS_AGE_KEY_FILE at the file to read tenant secrets
                        with ` + "`tenantctl secrets get` or `sops -d`" + `.

Existing files are never overwritten unless --force is given (a replaced
control-plane key cannot open secrets sealed before). The directory is
made 0700 and the key files 0600, also when they already exist.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := keyDir(dir); err != nil {
				return err
			}
			out := map[string]string{}
			for _, name := range []string{"control-plane", "operator"} {
				path := filepath.Join(dir, name+".agekey")
				rec, err := writeIdentity(path, force)
				if err != nil {
					return err
				}
				out[name+"_identity_file"] = path
				out[name+"_recipient"] = rec
			}
			return g.emit(out, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "control-plane identity: %s\n  recipient: %s\noperator identity:      %s\n  recipient: %s\n",
					out["control-plane_identity_file"], out["control-plane_recipient"], out["operator_identity_file"], out["operator_recipient"])
				return err
			})
		},
	}
	initCmd.Flags().StringVar(&dir, "dir", envOr("TENANTPROV_KEYS_DIR", ".keys"), "directory for the key files (env TENANTPROV_KEYS_DIR)")
	initCmd.Flags().BoolVar(&force, "force", false, "overwrite existing key files")
	keys.AddCommand(initCmd)
	return keys
}

// writeIdentity creates an age identity at path (or reads the existing one
// when force is false) and returns its recipient.
func writeIdentity(path string, force bool) (string, error) {
	if !force {
		if f, err := os.Open(path); err == nil {
			defer f.Close()
			if err := f.Chmod(0o600); err != nil {
				return "", fail(exitFailed, "restrict %s to its owner: %v", path, err)
			}
			ids, err := age.ParseIdentities(f)
			if err != nil || len(ids) == 0 {
				return "", fail(exitFailed, "%s exists and is not an age identity file; use --force to replace it", path)
			}
			if x, ok := ids[0].(*age.X25519Identity); ok {
				return x.Recipient().String(), nil
			}
			return "", fail(exitFailed, "%s holds no X25519 identity", path)
		} else if !errors.Is(err, os.ErrNotExist) {
			return "", fail(exitFailed, "read %s: %v", path, err)
		}
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		return "", fail(exitFailed, "generate key: %v", err)
	}
	content := fmt.Sprintf("# created by tenantprov keys init\n# public key: %s\n%s\n", id.Recipient(), id)
	if err := writeFileAtomic(path, []byte(content)); err != nil {
		return "", fail(exitFailed, "write %s: %v", path, err)
	}
	return id.Recipient().String(), nil
}

// keyDir creates dir with mode 0700, or tightens an existing one to 0700.
func keyDir(dir string) error {
	st, err := os.Lstat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fail(exitFailed, "create %s: %v", dir, err)
		}
	case err != nil:
		return fail(exitFailed, "%s: %v", dir, err)
	case !st.IsDir():
		return fail(exitFailed, "%s exists and is not a directory (a symbolic link is refused too)", dir)
	}
	// MkdirAll's mode is subject to the umask, and an existing directory
	// keeps whatever mode it had: set it.
	if err := os.Chmod(dir, 0o700); err != nil {
		return fail(exitFailed, "restrict %s to its owner: %v", dir, err)
	}
	return nil
}

// writeFileAtomic writes data to path through a temporary file created
// fresh (O_EXCL, mode 0600 set explicitly, never an existing file's mode or
// a link planted in its place) and renamed over path.
func writeFileAtomic(path string, data []byte) (err error) {
	tmp := path + ".tmp"
	// A leftover from a crash (or anything else by that name) is removed,
	// never reused: O_EXCL then refuses anything that reappears.
	if err := os.Remove(tmp); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(0o600); err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
