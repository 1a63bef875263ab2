package storetest_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/testkit/storetest"
)

// memStore is an in-memory store with users, passwords and per-tenant
// slices, used to test the conformance suite itself and the agent runtime's
// transport. It is not a stand-in for any real store: the agents run the
// suite against their real servers.
//
// defect, when set, breaks one promise of the contract so that tests can
// check the suite notices.
type memStore struct {
	defect string

	mu    sync.Mutex
	users map[string]*memUser        // by user name
	data  map[string]map[string]bool // slice name → keys

	// hooks let runtime tests inject errors and slowness; they run before
	// the store does anything.
	beforeProvision   func(ctx context.Context, req agent.ProvisionRequest) error
	beforeDeprovision func(ctx context.Context, req agent.DeprovisionRequest) error
	pingErr           atomic.Pointer[error]

	provisions, deprovisions atomic.Int64
	lastPassword             atomic.Pointer[secret.String]
}

type memUser struct {
	password string
	ours     bool // created by tenantprov (the marker)
	tenant   events.TenantID
}

const canarySlice = "tenantprov_canary"

func newMemStore(defect string) *memStore {
	return &memStore{
		defect: defect,
		users:  map[string]*memUser{},
		data:   map[string]map[string]bool{canarySlice: {"canary": true}},
	}
}

var _ agent.Store = (*memStore)(nil)

func (s *memStore) Kind() events.Store { return events.StoreRedis }

func (s *memStore) Provision(ctx context.Context, req agent.ProvisionRequest) (agent.ProvisionResponse, error) {
	s.provisions.Add(1)
	s.lastPassword.Store(&req.Password)
	if s.beforeProvision != nil {
		if err := s.beforeProvision(ctx, req); err != nil {
			return agent.ProvisionResponse{}, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := req.Tenant.RedisUser()
	if u, ok := s.users[name]; ok && !u.ours && s.defect != "adopt" {
		return agent.ProvisionResponse{}, agent.Conflict("ACL user " + name)
	}
	s.users[name] = &memUser{password: req.Password.Reveal(), ours: true, tenant: req.Tenant}
	if s.data[name] == nil {
		s.data[name] = map[string]bool{}
	}
	cred := agent.Credential{"username": name, "password": req.Password, "key_prefix": req.Tenant.RedisKeyPrefix()}
	if s.defect == "plain-password" {
		cred["password"] = req.Password.Reveal()
	}
	res := map[string]string{"user": name, "key_prefix": req.Tenant.RedisKeyPrefix()}
	if s.defect == "unstable-resources" {
		res["created"] = fmt.Sprint(s.provisions.Load())
	}
	return agent.ProvisionResponse{Resources: res, Credential: cred}, nil
}

// login returns the user the credential authenticates as, or an error.
func (s *memStore) login(cred agent.Credential) (*memUser, error) {
	u, ok := s.users[cred.String("username")]
	if !ok || u.password != cred.Secret("password").Reveal() {
		if s.defect == "trust" && ok {
			return u, nil
		}
		return nil, errors.New("WRONGPASS invalid username-password pair")
	}
	return u, nil
}

// access reads and writes key in slice as cred.
func (s *memStore) access(cred agent.Credential, slice string) error {
	u, err := s.login(cred)
	if err != nil {
		return err
	}
	if slice != u.tenant.RedisUser() && s.defect != "open" {
		return errors.New("NOPERM no permissions to access " + slice)
	}
	keys, ok := s.data[slice]
	if !ok {
		return errors.New("no such slice " + slice)
	}
	keys["probe"] = true
	return nil
}

func (s *memStore) Verify(_ context.Context, req agent.VerifyRequest) (agent.VerifyResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	check := func(name string, err error, wantDenied bool) events.Check {
		c := events.Check{Name: name, Passed: (err == nil) != wantDenied}
		if err != nil {
			c.Detail = err.Error()
		}
		return c
	}
	wrong := agent.Credential{"username": req.Credential.String("username"), "password": secret.String("wrong-" + req.Credential.Secret("password").Reveal())}
	_, wrongErr := s.login(wrong)
	checks := []events.Check{
		check(agent.CheckOwnAccess, s.access(req.Credential, req.Tenant.RedisUser()), false),
		check(agent.CheckWrongPasswordRefused, wrongErr, true),
		check(agent.CheckAdminDenied, errors.New("NOPERM admin"), true),
	}
	if s.defect != "no-canary-check" {
		checks = append(checks, check(agent.CheckCanaryDenied, s.access(req.Credential, canarySlice), true))
	}
	return agent.VerifyResponse{Checks: checks}, nil
}

func (s *memStore) Deprovision(ctx context.Context, req agent.DeprovisionRequest) (agent.DeprovisionResponse, error) {
	s.deprovisions.Add(1)
	if s.beforeDeprovision != nil {
		if err := s.beforeDeprovision(ctx, req); err != nil {
			return agent.DeprovisionResponse{}, err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	name := req.Tenant.RedisUser()
	var resp agent.DeprovisionResponse
	if u, ok := s.users[name]; ok {
		switch {
		case !u.ours && s.defect != "delete-foreign":
			resp.Skipped = append(resp.Skipped, "ACL user "+name)
		case s.defect == "no-revoke":
		default:
			delete(s.users, name)
		}
	}
	if len(resp.Skipped) == 0 && s.defect != "keep-data" {
		delete(s.data, name)
	}
	return resp, nil
}

func (s *memStore) Ping(context.Context) error {
	if p := s.pingErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *memStore) harness() *storetest.Harness {
	return &storetest.Harness{
		Store: s,
		OwnAccess: func(_ context.Context, tenant events.TenantID, cred agent.Credential) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			return s.access(cred, tenant.RedisUser())
		},
		CrossAccess: func(_ context.Context, cred agent.Credential, other events.TenantID) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			if err := s.access(cred, other.RedisUser()); err == nil {
				return fmt.Errorf("read and wrote %s's keys", other)
			}
			return nil
		},
		Exists: func(_ context.Context, tenant events.TenantID) (bool, error) {
			s.mu.Lock()
			defer s.mu.Unlock()
			_, u := s.users[tenant.RedisUser()]
			_, d := s.data[tenant.RedisUser()]
			return u || d, nil
		},
		CreateForeign: func(_ context.Context, tenant events.TenantID) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.users[tenant.RedisUser()] = &memUser{password: "someone-elses", tenant: tenant}
			return nil
		},
		ForeignIntact: func(_ context.Context, tenant events.TenantID) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			u, ok := s.users[tenant.RedisUser()]
			if !ok || u.ours || u.password != "someone-elses" {
				return fmt.Errorf("foreign user %s changed or gone", tenant.RedisUser())
			}
			return nil
		},
		Interrupt: func(_ context.Context, tenant events.TenantID, _ uint64, pw secret.String) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			// The user was created, the slice not yet.
			s.users[tenant.RedisUser()] = &memUser{password: pw.Reveal(), ours: true, tenant: tenant}
			return nil
		},
	}
}
