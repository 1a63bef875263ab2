package saga

// The lifecycle after provisioning (DESIGN.md §10) as transitions of Step:
// rotation, suspend/resume, retention/restore. Like the rest of Step they
// do no I/O; their effects go into the outbox.

// lifecycleResult applies a store's answer to a lifecycle command (rotate,
// retire, suspend, resume).
func (t *step) lifecycleResult(ev Event) Decision {
	return Decision{Note: "lifecycle result " + string(ev.Result.Outcome) + " not handled yet"}
}
