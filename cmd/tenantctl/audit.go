package main

import (
	"github.com/spf13/cobra"
)

func newAuditCmd(g *globals) *cobra.Command {
	var tenant, typ string
	var verify bool
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "List the audit trail, or verify its hash chain",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return fail(exitFailed, "audit: not available in this build yet")
		},
	}
	cmd.Flags().StringVar(&tenant, "tenant", "", "only events of this tenant")
	cmd.Flags().StringVar(&typ, "type", "", "only events of this type, e.g. TENANT_PROVISIONED")
	cmd.Flags().BoolVar(&verify, "verify", false, "walk the hash chain and report the first broken row")
	return cmd
}
