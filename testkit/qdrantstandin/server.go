package qdrantstandin

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/qdrant/go-client/qdrant"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Title is the HealthCheck title the stand-in reports, so that anything
// that asks the server what it is learns it is not Qdrant.
const Title = "qdrant-standin"

// EmulatedVersion is the Qdrant release whose API and auth rules the
// stand-in follows; Version is what its HealthCheck reports. Version parses
// as 1.17 for the go-client's compatibility check, and its suffix names the
// stand-in.
const (
	EmulatedVersion = "1.17.1"
	Version         = EmulatedVersion + "-standin"
)

// maxMessageSize matches the order of Qdrant's default gRPC request limit.
const maxMessageSize = 64 << 20

// Config configures a Server. The zero value serves without authentication,
// as Qdrant does without an API key.
type Config struct {
	// APIKey, when set, is required on every request (except HealthCheck)
	// and grants full manage access. With JWTRBAC it also signs tokens.
	APIKey string
	// ReadOnlyAPIKey, when set, grants global read-only access.
	ReadOnlyAPIKey string
	// JWTRBAC accepts HS256 JWTs signed with APIKey, with Qdrant's claims
	// (access, exp, value_exists). Without APIKey it has no effect.
	JWTRBAC bool
	// Logf receives one line per notable event (start, collection created
	// or dropped, request refused). Keys and tokens are never logged. Nil
	// discards.
	Logf func(format string, args ...any)
}

// Server is a running-or-startable Qdrant stand-in. All methods are safe
// for concurrent use; its data lives only as long as the Server.
type Server struct {
	qdrant.UnimplementedQdrantServer

	collectionsSvc collectionsService
	pointsSvc      pointsService

	cfg  Config
	auth *authenticator
	grpc *grpc.Server

	state *state

	stopOnce sync.Once
	down     atomic.Bool
}

// SetDown makes every call fail with codes.Unavailable — what a client sees
// while a server is stopped — or serve again. State is kept, as it would be
// across a restart of a persistent server. For failure tests.
func (s *Server) SetDown(down bool) { s.down.Store(down) }

// state is the in-memory store shared by the services.
type state struct {
	mu          sync.RWMutex
	collections map[string]*collection
	opCounter   uint64 // guarded by mu (write)
	logf        func(format string, args ...any)
}

// New returns a Server configured by cfg. It listens on nothing until
// Serve is called.
func New(cfg Config) *Server {
	st := &state{collections: map[string]*collection{}}
	s := &Server{
		cfg:            cfg,
		state:          st,
		collectionsSvc: collectionsService{st: st},
		pointsSvc:      pointsService{st: st},
	}
	st.logf = s.logf
	s.auth = &authenticator{
		apiKey:      cfg.APIKey,
		readOnlyKey: cfg.ReadOnlyAPIKey,
		jwtRBAC:     cfg.JWTRBAC,
		valueExists: st.valueExists,
		now:         time.Now,
	}
	s.grpc = grpc.NewServer(
		grpc.UnaryInterceptor(s.intercept),
		grpc.MaxRecvMsgSize(maxMessageSize),
		grpc.MaxSendMsgSize(maxMessageSize),
		// The official client pings every 10 s even when idle; Qdrant
		// accepts that, so must the stand-in (grpc-go would otherwise
		// close the connection with "too_many_pings").
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	qdrant.RegisterQdrantServer(s.grpc, s)
	qdrant.RegisterCollectionsServer(s.grpc, &s.collectionsSvc)
	qdrant.RegisterPointsServer(s.grpc, &s.pointsSvc)
	return s
}

// Serve accepts gRPC connections on lis until Stop is called, then returns
// nil; any other return is an accept error. lis is closed on return. Serve
// after Stop returns grpc.ErrServerStopped.
func (s *Server) Serve(lis net.Listener) error {
	auth := "no authentication"
	switch {
	case s.cfg.APIKey != "" && s.cfg.JWTRBAC:
		auth = "API key + JWT RBAC"
	case s.cfg.APIKey != "" || s.cfg.ReadOnlyAPIKey != "":
		auth = "API key"
	}
	s.logf("STAND-IN for Qdrant %s (not Qdrant) serving gRPC on %s, %s, in memory", EmulatedVersion, lis.Addr(), auth)
	return s.grpc.Serve(lis)
}

// Stop closes the listener and all connections, letting requests in flight
// finish for up to two seconds. It is idempotent.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		done := make(chan struct{})
		go func() {
			s.grpc.GracefulStop()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			s.grpc.Stop()
			<-done
		}
		s.logf("stopped")
	})
}

func (s *Server) logf(format string, args ...any) {
	if s.cfg.Logf != nil {
		s.cfg.Logf("qdrant-standin: "+format, args...)
	}
}

// HealthCheck answers without authentication, as Qdrant does, and names
// the stand-in.
func (s *Server) HealthCheck(context.Context, *qdrant.HealthCheckRequest) (*qdrant.HealthCheckReply, error) {
	commit := "standin"
	return &qdrant.HealthCheckReply{Title: Title, Version: Version, Commit: &commit}, nil
}

// rule is the access a gRPC method needs before it runs.
type rule int

const (
	ruleAuthenticated rule = iota // any authenticated caller; the handler filters
	ruleNone                      // no authentication at all
	ruleManage                    // global manage
	ruleRead                      // read on the request's collection
	ruleWrite                     // write on the request's collection
)

var methodRules = map[string]rule{
	qdrant.Qdrant_HealthCheck_FullMethodName:           ruleNone,
	qdrant.Collections_Create_FullMethodName:           ruleManage,
	qdrant.Collections_Update_FullMethodName:           ruleManage,
	qdrant.Collections_Delete_FullMethodName:           ruleManage,
	qdrant.Collections_Get_FullMethodName:              ruleRead,
	qdrant.Collections_CollectionExists_FullMethodName: ruleRead,
	qdrant.Collections_List_FullMethodName:             ruleAuthenticated,
	// Qdrant's do_list_collection_aliases: read access on the collection.
	qdrant.Collections_ListCollectionAliases_FullMethodName: ruleRead,
	qdrant.Points_Upsert_FullMethodName:                     ruleWrite,
	qdrant.Points_Delete_FullMethodName:                     ruleWrite,
	qdrant.Points_Get_FullMethodName:                        ruleRead,
	qdrant.Points_Scroll_FullMethodName:                     ruleRead,
	qdrant.Points_Count_FullMethodName:                      ruleRead,
	qdrant.Points_Query_FullMethodName:                      ruleRead,
	qdrant.Points_Search_FullMethodName:                     ruleRead,
}

type namedRequest interface{ GetCollectionName() string }

// intercept authenticates every request (HealthCheck excepted) and checks
// the method's access before the handler looks anything up, as Qdrant's
// middleware and dispatcher do.
func (s *Server) intercept(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if s.down.Load() {
		return nil, status.Error(codes.Unavailable, "qdrant-standin: server is down (failure injection)")
	}
	r := methodRules[info.FullMethod]
	if r == ruleNone {
		return handler(ctx, req)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	acc, err := s.auth.authenticate(md)
	if err != nil {
		s.logf("%s refused: %s: %s", info.FullMethod, status.Code(err), status.Convert(err).Message())
		return nil, err
	}
	var name string
	if nr, ok := req.(namedRequest); ok {
		name = nr.GetCollectionName()
	}
	switch r {
	case ruleManage:
		err = acc.checkManage()
	case ruleRead:
		err = acc.checkRead(name)
	case ruleWrite:
		err = acc.checkWrite(name)
	}
	if err != nil {
		s.logf("%s on %q refused: %s: %s", info.FullMethod, name, status.Code(err), status.Convert(err).Message())
		return nil, err
	}
	return handler(withAccess(ctx, acc), req)
}

// valueExists is the stateful check behind a JWT's value_exists claim.
func (st *state) valueExists(name string, matches []valueMatch) (collectionFound, pointFound bool) {
	st.mu.RLock()
	defer st.mu.RUnlock()
	c, ok := st.collections[name]
	if !ok {
		return false, false
	}
	for _, p := range c.valueCandidates(matches) {
		if matchesAll(p, matches) {
			return true, true
		}
	}
	return true, false
}

func elapsed(start time.Time) float64 { return time.Since(start).Seconds() }
