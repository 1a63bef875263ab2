package saga

// observed applies a store's observation of a tenant's slice (drift,
// DESIGN.md §10) to the record and audits what it found.
func (t *step) observed(ev Event) Decision {
	return Decision{Note: "observation " + string(ev.Result.Outcome) + " not handled yet"}
}
