// Command tenantctl is the operator CLI of tenantprov: provision and
// deprovision tenants, inspect their records, read their sealed secrets and
// the audit trail. Its commands arrive with the operator-experience issue.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `tenantctl — operate tenantprov

Usage:
  tenantctl <command> [flags]

Commands (arriving with the operator-experience issue):
  keys init            create the control-plane and an operator age key
  provision <id>       request a tenant
  deprovision <id>     remove a tenant
  status <id>          show a tenant's record
  list                 list tenants
  secrets get <id>     decrypt a tenant's sealed secrets
  audit                list and verify the audit trail
`

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "tenantctl: %q is not implemented yet\n\n%s", args[0], usage)
	return 2
}
