package redisstore

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
)

// TestConcurrentVerifiesShareFreshReads: while other tenants' Verifies keep
// the ACL rounds busy, a user given a pattern reaching tenant A just before
// A's Verify is still caught (the shared read began after A asked), and
// the inward checks share reads (fewer ACL LISTs than checks).
func TestConcurrentVerifiesShareFreshReads(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 5*time.Minute)
	a := events.MustTenantID("share-a")
	credA := e.provision(t, ctx, a, 1).Credential
	var busy []events.TenantID
	for i := range 4 {
		id := events.MustTenantID(fmt.Sprintf("share-busy-%d", i))
		e.provision(t, ctx, id, 1)
		busy = append(busy, id)
	}

	stop := make(chan struct{})
	var checks atomic.Int64
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := e.store.checkInward(ctx, busy[i%len(busy)])
				if err != nil || !c.Passed {
					t.Errorf("busy tenant's inward check: %v %+v", err, c)
					return
				}
				checks.Add(1)
			}
		}()
	}
	defer func() { close(stop); wg.Wait() }()

	before := e.store.aclRounds.Fetches()
	for round := range 5 {
		time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
		if err := e.admin.Do(ctx, "ACL", "SETUSER", "intruder", "reset", "on", "nopass", "~"+a.RedisKeyPrefix()+"*", "+get").Err(); err != nil {
			t.Fatal(err)
		}
		v, err := e.store.Verify(ctx, agent.VerifyRequest{Tenant: a, Generation: 1, Credential: credA})
		if err != nil {
			t.Fatal(err)
		}
		if c := checkNamed(v.Checks, CheckInwardIsolation); c.Passed || !strings.Contains(c.Detail, "intruder") {
			t.Fatalf("round %d: a pattern reaching %s set just before Verify went unseen: %+v", round, a, c)
		}
		if err := e.admin.Do(ctx, "ACL", "DELUSER", "intruder").Err(); err != nil {
			t.Fatal(err)
		}
		v, err = e.store.Verify(ctx, agent.VerifyRequest{Tenant: a, Generation: 1, Credential: credA})
		if err != nil {
			t.Fatal(err)
		}
		if c := checkNamed(v.Checks, CheckInwardIsolation); !c.Passed {
			t.Fatalf("round %d: the intruder was deleted before Verify, yet: %+v", round, c)
		}
	}
	reads := e.store.aclRounds.Fetches() - before
	n := checks.Load() + 10
	t.Logf("%d inward checks shared %d ACL reads", n, reads)
	if int64(reads) >= n {
		t.Errorf("%d inward checks made %d ACL reads: none were shared", n, reads)
	}
}

// TestConcurrentProvisionsShareSaves: concurrent Provisions share ACL SAVEs,
// and every user each of them created is in the aclfile once they return
// (a shared save began after the change it persists).
func TestConcurrentProvisionsShareSaves(t *testing.T) {
	e := newEnv(t)
	ctx := ctxFor(t, 5*time.Minute)
	const n = 24
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := events.MustTenantID(fmt.Sprintf("save-%d", i))
			if _, err := e.store.Provision(ctx, agent.ProvisionRequest{Tenant: id, Generation: 1, Password: password(t)}); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	file, err := os.ReadFile(e.redis.ACLFile)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		user := events.MustTenantID(fmt.Sprintf("save-%d", i)).RedisUser()
		if !strings.Contains(string(file), "user "+user+" ") {
			t.Errorf("%s is missing from the aclfile after its Provision returned", user)
		}
	}
	saves := e.store.saveRounds.Fetches()
	t.Logf("%d provisions, %d ACL SAVEs", n, saves)
	if saves >= n {
		t.Errorf("%d provisions made %d ACL SAVEs: none were shared", n, saves)
	}
}

// TestACLPatternReaches: the fast reading of simple patterns agrees with
// globReaches on every pattern, simple or not.
func TestACLPatternReaches(t *testing.T) {
	alphabet := []byte("tenant:ab*?[]\\x")
	prefixes := []string{"tenant:ab:", "tenant:a:", "channel:tenant:ab:", ""}
	r := rand.New(rand.NewPCG(1, 2))
	simple := 0
	for range 20000 {
		var b []byte
		if r.IntN(2) == 0 {
			b = append(b, "tenant:ab:"[:r.IntN(11)]...)
		}
		for n := r.IntN(5); n > 0; n-- {
			b = append(b, alphabet[r.IntN(len(alphabet))])
		}
		p := newACLPattern(string(b))
		if p.simple {
			simple++
		}
		for _, prefix := range prefixes {
			if got, want := p.reaches(prefix), globReaches(p.text, prefix); got != want {
				t.Fatalf("pattern %q, prefix %q: reaches %v, globReaches %v", p.text, prefix, got, want)
			}
		}
	}
	if simple == 0 {
		t.Fatal("no simple pattern generated: the fast path went untested")
	}
}
