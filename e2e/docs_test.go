package e2e

// TestStorageLayerDoc keeps the technical blocks of
// docs/architecture/STORAGE_LAYER.md from drifting away from the code.
//
// Every block the document marks with `<!-- generated: NAME -->` right
// before its fence is regenerated here for the sample tenant "acme" —
// from exported code (TenantPolicy, HBALine, the events constants, the
// configuration structs) and, where the artefact is built inside a store,
// by running the real store against a real server and capturing what it
// did: the SQL pg-agent executes (read back from PostgreSQL's own
// statement log), the Redis commands redis-agent sends (read off the wire
// by a RESP-recording proxy), the JWT and system points qdrant-agent
// writes, the tags and record minio-agent leaves, the checks every Verify
// reports, and the secrets file the sealer builds from the four real
// credentials. Volatile values (hashes, salts, timestamps, random names)
// are normalised to placeholders. The test fails when a block differs,
// when the document has a marker no generator knows, or when a generator's
// block has no marker.
//
//	go test -count=1 -run TestStorageLayerDoc ./e2e/            # check
//	go test -count=1 -run TestStorageLayerDoc ./e2e/ -update    # rewrite the blocks

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/getsops/sops/v3/cmd/sops/formats"
	"github.com/getsops/sops/v3/decrypt"
	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/qdrant/go-client/qdrant"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/metadata"
	"gopkg.in/yaml.v3"

	"github.com/tenantprov/tenantprov/pkg/agent"
	"github.com/tenantprov/tenantprov/pkg/events"
	"github.com/tenantprov/tenantprov/pkg/secret"
	"github.com/tenantprov/tenantprov/pkg/service"
	"github.com/tenantprov/tenantprov/services/minio-agent/miniostore"
	"github.com/tenantprov/tenantprov/services/orchestrator/saga"
	"github.com/tenantprov/tenantprov/services/orchestrator/sealer"
	"github.com/tenantprov/tenantprov/services/pg-agent/pgstore"
	"github.com/tenantprov/tenantprov/services/qdrant-agent/qdrantstore"
	"github.com/tenantprov/tenantprov/services/redis-agent/redisstore"
	"github.com/tenantprov/tenantprov/testkit"
)

var updateDoc = flag.Bool("update", false, "rewrite the generated blocks of docs/architecture/STORAGE_LAYER.md from the code")

const (
	storageDocPath = "../docs/architecture/STORAGE_LAYER.md"
	eventsSrcDir   = "../pkg/events"
	docTenant      = "acme"
	docGeneration  = 1
	docSagaID      = "acme-g1" // the saga's "<id>-g<generation>"
)

// The endpoints `make up` (scripts/dev-up.sh) gives the stores. The stores
// under test are configured to publish them, so the credentials — and the
// secrets file built from them — read exactly as on the dev stack.
const (
	devPGPort      = 15432
	devRedisAddr   = "127.0.0.1:16379"
	devMinIO       = "127.0.0.1:19000"
	devQdrantPort  = 16334
	devHost        = "127.0.0.1"
	devTenantCIDR  = "127.0.0.1/32" // PG_TENANT_CIDR in dev-up.sh
	docPlaceholder = "<generated>"
)

// docBlocks collects generated blocks and the real credentials of the
// sample tenant, from subtests running in parallel.
type docBlocks struct {
	mu     sync.Mutex
	blocks map[string]string
	creds  map[events.Store]agent.Credential
}

func (b *docBlocks) set(name, content string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !strings.HasSuffix(content, "\n") {
		content += "\n"
	}
	b.blocks[name] = content
}

func (b *docBlocks) setCred(s events.Store, c agent.Credential) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.creds[s] = c
}

// docGenerated lists every block name the generators produce; the test
// insists each appears in the document exactly once.
var docGenerated = []string{
	"names", "subjects", "jetstream", "msg-ids", "audit-types", "config", "record-fields",
	"minio-policy", "minio-calls", "minio-markers",
	"postgres-sql", "pg-hba",
	"redis-acl", "redis-commands", "redis-marker",
	"qdrant-claims", "qdrant-collection", "qdrant-system-points",
	"resources", "verify-checks",
	"secrets-file", "secrets-file-sealed",
}

func TestStorageLayerDoc(t *testing.T) {
	begin := time.Now()
	b := &docBlocks{blocks: map[string]string{}, creds: map[events.Store]agent.Credential{}}
	var resources sync.Map // store -> Resources
	var checks sync.Map    // store -> []events.Check

	t.Run("generate", func(t *testing.T) {
		t.Run("contract", func(t *testing.T) { t.Parallel(); genContract(t, b) })
		t.Run("postgres", func(t *testing.T) { t.Parallel(); genPostgres(t, b, &resources, &checks) })
		t.Run("redis", func(t *testing.T) { t.Parallel(); genRedis(t, b, &resources, &checks) })
		t.Run("minio", func(t *testing.T) { t.Parallel(); genMinIO(t, b, &resources, &checks) })
		t.Run("qdrant", func(t *testing.T) { t.Parallel(); genQdrant(t, b, &resources, &checks) })
	})
	if t.Failed() {
		return
	}
	if len(b.creds) == len(events.Stores()) {
		genPerStore(t, b, &resources, &checks)
		genSecretsFile(t, b)
	}

	raw, err := os.ReadFile(storageDocPath)
	if err != nil {
		t.Fatalf("read %s: %v", storageDocPath, err)
	}
	doc, err := parseDocBlocks(string(raw))
	if err != nil {
		t.Fatalf("%s: %v", storageDocPath, err)
	}
	checkStateDiagram(t, string(raw))

	var missing []string
	for _, name := range docGenerated {
		if _, ok := b.blocks[name]; !ok {
			missing = append(missing, name)
		}
	}
	for name := range b.blocks {
		if !contains(docGenerated, name) {
			t.Errorf("generator produced block %q that docGenerated does not list", name)
		}
	}
	if len(missing) > 0 {
		// A subtest was skipped (a server binary is missing; testkit said
		// which). Those blocks cannot be checked, nor rewritten.
		if *updateDoc {
			t.Fatalf("cannot -update: blocks %v were not generated (see the skipped subtests)", missing)
		}
		t.Logf("NOT CHECKED (their generators were skipped): %v", missing)
	}

	for _, name := range doc.order {
		if !contains(docGenerated, name) {
			t.Errorf("%s marks a block %q that no generator produces (remove the marker or add a generator)", storageDocPath, name)
		}
	}
	for _, name := range docGenerated {
		if _, ok := doc.blocks[name]; !ok {
			t.Errorf("%s has no `<!-- generated: %s -->` block; add one where it belongs", storageDocPath, name)
		}
	}

	if *updateDoc {
		out := doc.render(b.blocks)
		if out != string(raw) {
			if err := os.WriteFile(storageDocPath, []byte(out), 0o644); err != nil {
				t.Fatal(err)
			}
			t.Logf("rewrote generated blocks in %s", storageDocPath)
		}
		return
	}
	for _, name := range doc.order {
		want, ok := b.blocks[name]
		if !ok {
			continue
		}
		if got := doc.blocks[name]; got != want {
			t.Errorf("generated block %q in %s is out of date with the code (rerun with -update after checking the change):\n%s",
				name, storageDocPath, lineDiff(got, want))
		}
	}
	t.Logf("checked %d generated blocks in %s", len(doc.order), time.Since(begin).Round(time.Millisecond))
}

// --- the document ----------------------------------------------------------

var markerRE = regexp.MustCompile(`^<!-- generated: ([a-z0-9-]+) -->$`)

// markedDoc is the document split around its generated blocks.
type markedDoc struct {
	lines  []string
	spans  map[string][2]int // name -> [first content line, fence-closing line)
	blocks map[string]string
	order  []string
}

func parseDocBlocks(text string) (*markedDoc, error) {
	d := &markedDoc{lines: strings.Split(text, "\n"), spans: map[string][2]int{}, blocks: map[string]string{}}
	for i := 0; i < len(d.lines); i++ {
		m := markerRE.FindStringSubmatch(d.lines[i])
		if m == nil {
			if strings.HasPrefix(strings.TrimSpace(d.lines[i]), "<!-- generated:") {
				return nil, fmt.Errorf("line %d: malformed marker %q (want `<!-- generated: name -->` alone on its line)", i+1, d.lines[i])
			}
			continue
		}
		name := m[1]
		if _, dup := d.spans[name]; dup {
			return nil, fmt.Errorf("line %d: block %q is marked twice", i+1, name)
		}
		if i+1 >= len(d.lines) || !strings.HasPrefix(d.lines[i+1], "```") {
			return nil, fmt.Errorf("line %d: marker %q must be followed directly by a ``` fence", i+1, name)
		}
		start := i + 2
		end := start
		for end < len(d.lines) && d.lines[end] != "```" {
			end++
		}
		if end == len(d.lines) {
			return nil, fmt.Errorf("line %d: block %q has no closing ``` fence", i+1, name)
		}
		d.spans[name] = [2]int{start, end}
		content := strings.Join(d.lines[start:end], "\n")
		if end > start {
			content += "\n"
		}
		d.blocks[name] = content
		d.order = append(d.order, name)
		i = end
	}
	return d, nil
}

// render returns the document with every block it marks replaced by the
// generated one (blocks without a generated value are kept).
func (d *markedDoc) render(gen map[string]string) string {
	var out []string
	i := 0
	type span struct {
		name       string
		start, end int
	}
	var spans []span
	for name, s := range d.spans {
		spans = append(spans, span{name, s[0], s[1]})
	}
	sort.Slice(spans, func(a, b int) bool { return spans[a].start < spans[b].start })
	for _, s := range spans {
		out = append(out, d.lines[i:s.start]...)
		if g, ok := gen[s.name]; ok {
			out = append(out, strings.Split(strings.TrimSuffix(g, "\n"), "\n")...)
		} else {
			out = append(out, d.lines[s.start:s.end]...)
		}
		i = s.end
	}
	out = append(out, d.lines[i:]...)
	return strings.Join(out, "\n")
}

// checkStateDiagram requires a mermaid stateDiagram-v2 that names every
// tenant state and every per-store state of pkg/events.
func checkStateDiagram(t *testing.T, doc string) {
	t.Helper()
	var diagrams []string
	for _, part := range strings.Split(doc, "```mermaid\n")[1:] {
		body, _, _ := strings.Cut(part, "```")
		if strings.Contains(body, "stateDiagram-v2") {
			diagrams = append(diagrams, body)
		}
	}
	if len(diagrams) == 0 {
		t.Errorf("%s has no ```mermaid stateDiagram-v2 block", storageDocPath)
		return
	}
	all := strings.Join(diagrams, "\n")
	consts := eventsConsts(t)
	for _, typ := range []string{"TenantState", "StoreState"} {
		for _, c := range consts[typ] {
			if !regexp.MustCompile(`\b` + regexp.QuoteMeta(c.value) + `\b`).MatchString(all) {
				t.Errorf("the state diagrams do not mention %s %q (%s)", typ, c.value, c.name)
			}
		}
	}
}

// lineDiff is a small LCS line diff: "-" lines are in the document, "+"
// lines are what the code generates.
func lineDiff(got, want string) string {
	a, b := strings.Split(got, "\n"), strings.Split(want, "\n")
	n, m := len(a), len(b)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	type op struct {
		kind byte // ' ', '-', '+'
		line string
	}
	var ops []op
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && a[i] == b[j]:
			ops = append(ops, op{' ', a[i]})
			i++
			j++
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			ops = append(ops, op{'+', b[j]})
			j++
		default:
			ops = append(ops, op{'-', a[i]})
			i++
		}
	}
	// Print the changes with two lines of context.
	const ctx = 2
	show := make([]bool, len(ops))
	for k, o := range ops {
		if o.kind != ' ' {
			for d := max(0, k-ctx); d <= min(len(ops)-1, k+ctx); d++ {
				show[d] = true
			}
		}
	}
	var out strings.Builder
	out.WriteString("--- document\n+++ code\n")
	gap := false
	for k, o := range ops {
		if !show[k] {
			gap = true
			continue
		}
		if gap {
			out.WriteString("  …\n")
			gap = false
		}
		out.WriteString(string(o.kind) + " " + o.line + "\n")
	}
	return out.String()
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// --- the contract: names, subjects, streams, IDs, audit types, config ------

type namedConst struct{ name, value string }

var (
	eventsConstsOnce sync.Once
	eventsConstsMap  map[string][]namedConst
	eventsConstsErr  error
)

// eventsConsts parses pkg/events and returns its string constants by
// declared type ("AuditType", "TenantState", …; untyped ones under ""), in
// source order. Parsing the source, rather than listing the constants
// here, is what makes a constant added to the contract show up as drift.
func eventsConsts(t *testing.T) map[string][]namedConst {
	t.Helper()
	eventsConstsOnce.Do(func() {
		fset := token.NewFileSet()
		files, err := filepath.Glob(filepath.Join(eventsSrcDir, "*.go"))
		if err != nil || len(files) == 0 {
			eventsConstsErr = fmt.Errorf("no Go files in %s (%v)", eventsSrcDir, err)
			return
		}
		sort.Strings(files)
		eventsConstsMap = map[string][]namedConst{}
		for _, path := range files {
			if strings.HasSuffix(path, "_test.go") {
				continue
			}
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				eventsConstsErr = err
				return
			}
			for _, decl := range f.Decls {
				gd, ok := decl.(*ast.GenDecl)
				if !ok || gd.Tok != token.CONST {
					continue
				}
				for _, spec := range gd.Specs {
					vs := spec.(*ast.ValueSpec)
					typ := ""
					if id, ok := vs.Type.(*ast.Ident); ok {
						typ = id.Name
					}
					for i, name := range vs.Names {
						if i >= len(vs.Values) {
							continue
						}
						lit, ok := vs.Values[i].(*ast.BasicLit)
						if !ok || lit.Kind != token.STRING {
							continue
						}
						v, err := strconv.Unquote(lit.Value)
						if err != nil {
							continue
						}
						eventsConstsMap[typ] = append(eventsConstsMap[typ], namedConst{name.Name, v})
					}
				}
			}
		}
	})
	if eventsConstsErr != nil {
		t.Fatalf("parse %s: %v", eventsSrcDir, eventsConstsErr)
	}
	return eventsConstsMap
}

func genContract(t *testing.T, b *docBlocks) {
	id := events.MustTenantID(docTenant)
	consts := eventsConsts(t)

	// names
	var nb strings.Builder
	tw := func(rows [][]string) {
		w := make([]int, len(rows[0]))
		for _, r := range rows {
			for i, c := range r {
				w[i] = max(w[i], len(c))
			}
		}
		for _, r := range rows {
			line := ""
			for i, c := range r {
				if i == len(r)-1 {
					line += c
				} else {
					line += c + strings.Repeat(" ", w[i]-len(c)+2)
				}
			}
			nb.WriteString(strings.TrimRight(line, " ") + "\n")
		}
	}
	tw([][]string{
		{"store", "resource", "events.TenantID method", "name for \"" + docTenant + "\""},
		{"minio", "bucket", "MinIOBucket()", id.MinIOBucket()},
		{"minio", "IAM user (access key)", "MinIOUser()", id.MinIOUser()},
		{"minio", "canned policy", "MinIOPolicy()", id.MinIOPolicy()},
		{"postgres", "database", "PostgresDatabase()", id.PostgresDatabase()},
		{"postgres", "login role", "PostgresRole()", id.PostgresRole()},
		{"qdrant", "collection", "QdrantCollection()", id.QdrantCollection()},
		{"redis", "ACL user", "RedisUser()", id.RedisUser()},
		{"redis", "key prefix", "RedisKeyPrefix()", id.RedisKeyPrefix()},
		{"redis", "channel prefix", "RedisChannelPrefix()", id.RedisChannelPrefix()},
		{"nats", "sealed secrets object", "SecretsObject()", events.ObjectStoreSecrets + "/" + id.SecretsObject()},
		{"minio", "canary bucket", "events.CanaryBucket", events.CanaryBucket},
		{"minio", "system bucket (records)", "miniostore.SystemBucket", miniostore.SystemBucket},
		{"postgres", "canary database", "events.CanaryDatabase", events.CanaryDatabase},
		{"qdrant", "canary collection", "events.CanaryCollection", events.CanaryCollection},
		{"qdrant", "system collection", "events.QdrantSystemCollection", events.QdrantSystemCollection},
		{"redis", "canary key", "redisstore.CanaryKey", redisstore.CanaryKey},
		{"redis", "managed-users record", "redisstore.ManagedUsersKey", redisstore.ManagedUsersKey},
	})
	b.set("names", nb.String())

	// subjects
	var sb strings.Builder
	sb.WriteString("# fixed subjects (pkg/events/subjects.go, topology.go)\n")
	for _, c := range consts[""] {
		if strings.HasPrefix(c.name, "Subject") {
			fmt.Fprintf(&sb, "%-40s %s\n", c.value, c.name)
		}
	}
	sb.WriteString("\n# store commands: events.CommandSubject(store, action)\n")
	for _, st := range events.Stores() {
		for _, a := range consts["Action"] {
			sb.WriteString(events.CommandSubject(st, events.Action(a.value)) + "\n")
		}
	}
	sb.WriteString("\n# store results: events.EventSubject(store, outcome)\n")
	for _, st := range events.Stores() {
		for _, o := range consts["Outcome"] {
			if strings.HasPrefix(o.name, "Outcome") {
				sb.WriteString(events.EventSubject(st, events.Outcome(o.value)) + "\n")
			}
		}
	}
	sb.WriteString("\n# saga outcomes: events.TenantOutcomeSubject(outcome)\n")
	for _, o := range consts["Outcome"] {
		if strings.HasPrefix(o.name, "TenantOutcome") {
			sb.WriteString(events.TenantOutcomeSubject(events.Outcome(o.value)) + "\n")
		}
	}
	sb.WriteString("\n# audit events: events.AuditSubject(type)\n")
	for _, a := range consts["AuditType"] {
		sb.WriteString(events.AuditSubject(events.AuditType(a.value)) + "\n")
	}
	b.set("subjects", sb.String())

	// jetstream
	var jb strings.Builder
	topo := events.Topology{}
	for _, s := range topo.Streams() {
		ret := "limits"
		if s.Retention == jetstream.WorkQueuePolicy {
			ret = "work-queue"
		}
		fmt.Fprintf(&jb, "stream %-15s subjects %-14s retention %-10s max-age %-8s dedup-window %s\n",
			s.Name, strings.Join(s.Subjects, ","), ret, shortDuration(s.MaxAge), shortDuration(s.Duplicates))
	}
	kv := topo.KeyValue()
	fmt.Fprintf(&jb, "kv     %-15s history %d, key = tenant ID, value = events.TenantRecord (JSON, indented)\n", kv.Bucket, kv.History)
	fmt.Fprintf(&jb, "object %-15s object <id>.sops.yaml\n", topo.ObjectStore().Bucket)
	fmt.Fprintf(&jb, "kv     %-15s history %d, key = <store>.<tenant>.g<generation> or <store>.<tenant>.foreign, value = events.Orphan (orphan sweep)\n", topo.Orphans().Bucket, topo.Orphans().History)
	fmt.Fprintf(&jb, "kv     %-15s history %d, ttl %s, key = the dry run's saga ID, value = its request and each store's answer (compare-and-set)\n", topo.DryRuns().Bucket, topo.DryRuns().History, shortDuration(topo.DryRuns().TTL))
	jb.WriteString("\n# durable consumers\n")
	for _, st := range events.Stores() {
		c := events.AgentConsumerConfig(st, agent.DefaultConfig().AckWait, agent.ConsumerMaxAckPending)
		fmt.Fprintf(&jb, "%-22s on %-15s filter %s\n", c.Durable, events.StreamStoreCommands, c.FilterSubject)
	}
	rq := events.OrchestratorRequestsConfig(time.Second)
	fmt.Fprintf(&jb, "%-22s on %-15s filter %s\n", rq.Durable, events.StreamTenants, strings.Join(rq.FilterSubjects, ", "))
	rs := events.OrchestratorResultsConfig(time.Second)
	fmt.Fprintf(&jb, "%-22s on %-15s filter %s\n", rs.Durable, events.StreamStoreEvents, rs.FilterSubject)
	ob := events.OrchestratorObserveConfig(time.Second)
	fmt.Fprintf(&jb, "%-22s on %-15s filter %s\n", ob.Durable, events.StreamTenants, ob.FilterSubject)
	as := events.AuditSinkConfig(time.Second)
	fmt.Fprintf(&jb, "%-22s on %-15s filter %s\n", as.Durable, events.StreamAudit, as.FilterSubject)
	b.set("jetstream", jb.String())

	// msg-ids
	var mb strings.Builder
	cmd := &events.StoreCommand{TenantID: docTenant, Generation: docGeneration, Store: events.StorePostgres, Action: events.ActionProvision}
	fmt.Fprintf(&mb, "%-58s %s\n", "events.CommandMsgID (provision)", events.CommandMsgID(cmd))
	cmd.Action, cmd.Attempt = events.ActionDeprovision, 2
	fmt.Fprintf(&mb, "%-58s %s\n", "events.CommandMsgID (compensation, attempt 2)", events.CommandMsgID(cmd))
	res := &events.StoreResult{TenantID: docTenant, Generation: docGeneration, Store: events.StorePostgres, Outcome: events.OutcomeProvisioned, CredentialID: "<credential_id>"}
	fmt.Fprintf(&mb, "%-58s %s\n", "events.ResultMsgID (provisioned)", events.ResultMsgID(res))
	res.Outcome, res.CredentialID, res.Attempt = events.OutcomeDeprovisioned, "", 2
	fmt.Fprintf(&mb, "%-58s %s\n", "events.ResultMsgID (deprovisioned, attempt 2)", events.ResultMsgID(res))
	fmt.Fprintf(&mb, "%-58s %s\n", "events.AuditEventID (tenant-level)", events.AuditEventID(events.AuditTenantProvisioned, docTenant, docGeneration, "", ""))
	fmt.Fprintf(&mb, "%-58s %s\n", "events.AuditEventID (store result: credential_id)", events.AuditEventID(events.AuditStoreProvisioned, docTenant, docGeneration, events.StorePostgres, "<credential_id>"))
	fmt.Fprintf(&mb, "%-58s %s\n", "events.AuditEventID (store result: a<attempt>)", events.AuditEventID(events.AuditStoreDeprovisioned, docTenant, docGeneration, events.StorePostgres, "a0"))
	fmt.Fprintf(&mb, "%-58s %s\n", "events.AuditEventID (rejection: stream sequence)", events.AuditEventID(events.AuditTenantRequestRejected, "<tenant_id as sent>", 0, "", "seq<n>"))
	b.set("msg-ids", mb.String())

	// audit-types
	var ab strings.Builder
	for _, a := range consts["AuditType"] {
		fmt.Fprintf(&ab, "%-32s events.%s\n", a.value, a.name)
	}
	b.set("audit-types", ab.String())

	// config
	var cb strings.Builder
	for _, c := range []struct {
		who string
		cfg any
	}{
		{"every service (pkg/service.Config)", service.Config{}},
		{"every agent (pkg/agent.Config)", agent.Config{}},
		{"orchestrator (saga.Config)", saga.Config{}},
		{"orchestrator: observation and orphan sweep (saga.ObserveConfig)", saga.ObserveConfig{}},
		{"minio-agent (miniostore.Config)", miniostore.Config{}},
		{"pg-agent (pgstore.Config)", pgstore.Config{}},
		{"qdrant-agent (qdrantstore.Config)", qdrantstore.Config{}},
		{"redis-agent (redisstore.Config)", redisstore.Config{}},
	} {
		cb.WriteString("# " + c.who + "\n")
		rt := reflect.TypeOf(c.cfg)
		for i := 0; i < rt.NumField(); i++ {
			f := rt.Field(i)
			name := f.Tag.Get("env")
			if name == "" {
				continue
			}
			def, ok := f.Tag.Lookup("envDefault")
			if !ok {
				def = "-"
			}
			fmt.Fprintf(&cb, "%-30s %s\n", name, def)
		}
		cb.WriteString("\n")
	}
	b.set("config", strings.TrimSuffix(cb.String(), "\n"))

	// record-fields
	var rf strings.Builder
	for _, typ := range []reflect.Type{reflect.TypeOf(events.TenantRecord{}), reflect.TypeOf(events.StoreStatus{}), reflect.TypeOf(events.SecretsRef{})} {
		rf.WriteString("# events." + typ.Name() + "\n")
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			name, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" {
				continue
			}
			if opts == "omitempty" {
				name += " (omitted when empty)"
			}
			fmt.Fprintf(&rf, "%-36s %s\n", name, strings.ReplaceAll(f.Type.String(), "events.", ""))
		}
		rf.WriteString("\n")
	}
	b.set("record-fields", strings.TrimSuffix(rf.String(), "\n"))

	// minio-policy
	var pb bytes.Buffer
	if err := json.Indent(&pb, miniostore.TenantPolicy(), "", "  "); err != nil {
		t.Fatal(err)
	}
	b.set("minio-policy", pb.String())

	// pg-hba
	b.set("pg-hba", "# PG_TENANT_CIDR default ("+pgstore.Defaults().TenantCIDR+")\n"+
		pgstore.HBALine(id.PostgresDatabase(), id.PostgresRole(), pgstore.Defaults().TenantCIDR)+"\n"+
		"# make up (PG_TENANT_CIDR="+devTenantCIDR+")\n"+
		pgstore.HBALine(id.PostgresDatabase(), id.PostgresRole(), devTenantCIDR)+"\n")
}

func shortDuration(d time.Duration) string {
	switch {
	case d == 0:
		return "none"
	case d%(24*time.Hour) == 0:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d%time.Hour == 0:
		return fmt.Sprintf("%dh", d/time.Hour)
	}
	return d.String()
}

// --- PostgreSQL ----------------------------------------------------------------

// pgLogEntry is one statement the server logged.
type pgLogEntry struct {
	app, db string
	sql     string
	params  string
}

var pgLogLineRE = regexp.MustCompile(`^@@([^|]*)\|([^@]*)@@ (LOG|DETAIL|ERROR|STATEMENT|WARNING|NOTICE|HINT|FATAL):  (.*)$`)

// readPGLog parses the statement log from offset on.
func readPGLog(t *testing.T, path string, from int64) ([]pgLogEntry, int64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read the PostgreSQL server log %s: %v (testkit keeps it beside the data directory)", path, err)
	}
	size := int64(len(data))
	var entries []pgLogEntry
	var cur *pgLogEntry
	var curKind string
	for _, line := range strings.Split(string(data[from:]), "\n") {
		m := pgLogLineRE.FindStringSubmatch(line)
		if m == nil {
			if cur != nil && curKind == "LOG" {
				// PostgreSQL indents continuation lines with a tab.
				cur.sql += "\n" + strings.TrimPrefix(line, "\t")
			}
			continue
		}
		app, db, level, msg := m[1], m[2], m[3], m[4]
		switch level {
		case "LOG":
			var sql string
			switch {
			case strings.HasPrefix(msg, "statement: "):
				sql = strings.TrimPrefix(msg, "statement: ")
			case strings.HasPrefix(msg, "execute "):
				_, sql, _ = strings.Cut(msg, ": ")
			default:
				cur, curKind = nil, ""
				continue
			}
			entries = append(entries, pgLogEntry{app: app, db: db, sql: sql})
			cur, curKind = &entries[len(entries)-1], "LOG"
		case "DETAIL":
			if cur != nil && strings.HasPrefix(msg, "parameters: ") && cur.app == app {
				cur.params = strings.TrimPrefix(msg, "parameters: ")
			}
			curKind = "DETAIL"
		default:
			curKind = level
		}
	}
	return entries, size
}

var scramRE = regexp.MustCompile(`SCRAM-SHA-256\$(\d+):[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+`)

// renderPGSegment renders the agent's own admin statements.
func renderPGSegment(title string, entries []pgLogEntry) string {
	var out strings.Builder
	out.WriteString("-- " + strings.ReplaceAll(title, "\n", "\n-- ") + "\n")
	db := "postgres"
	for _, e := range entries {
		if e.app != "tenantprov-pg-agent" {
			continue // other sessions: the test's own, the tenant's in Verify
		}
		sql := strings.TrimSpace(e.sql)
		if sql == "-- ping" || sql == "" {
			continue // pgxpool's liveness ping of an idle connection
		}
		if e.db != db {
			fmt.Fprintf(&out, "-- (admin connection to database %s)\n", e.db)
			db = e.db
		}
		sql = scramRE.ReplaceAllString(sql, "SCRAM-SHA-256$$${1}:<salt>$$<StoredKey>:<ServerKey>")
		if !strings.HasSuffix(sql, ";") {
			sql += ";"
		}
		out.WriteString(sql + "\n")
		if e.params != "" {
			out.WriteString("--   with " + e.params + "\n")
		}
	}
	return out.String()
}

func genPostgres(t *testing.T, b *docBlocks, resources, checks *sync.Map) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pg := testkit.StartPostgres(t)
	logPath := filepath.Join(filepath.Dir(pg.DataDir), "postgres.log")

	// Log every statement, prefixed with the session's application and
	// database, so that the agent's own statements can be picked out.
	admin, err := pgx.Connect(ctx, pg.AdminURL()+"&application_name=tenantprov-docs-test")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for _, stmt := range []string{
		"ALTER SYSTEM SET log_statement = 'all'",
		"ALTER SYSTEM SET log_line_prefix = '@@%a|%d@@ '",
		"SELECT pg_reload_conf()",
	} {
		if _, err := admin.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		c, err := pgx.Connect(ctx, pg.AdminURL()+"&application_name=tenantprov-docs-test")
		if err != nil {
			t.Fatal(err)
		}
		var prefix string
		err = c.QueryRow(ctx, "SHOW log_line_prefix").Scan(&prefix)
		c.Close(ctx)
		if err == nil && prefix == "@@%a|%d@@ " {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("postgres did not reload log_line_prefix (have %q, %v)", prefix, err)
		}
		time.Sleep(20 * time.Millisecond)
	}

	cfg := pgstore.Defaults()
	cfg.AdminURL = secret.String(pg.AdminURL())
	cfg.PublicHost, cfg.PublicPort = devHost, devPGPort
	cfg.SSLMode = "disable"        // as make up sets PG_SSLMODE
	cfg.TenantCIDR = devTenantCIDR // as make up sets PG_TENANT_CIDR
	store, err := pgstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	id := events.MustTenantID(docTenant)

	_, off := readPGLog(t, logPath, 0)
	var segments []string
	pw := mustGenerate(t)
	presp, err := store.Provision(ctx, agent.ProvisionRequest{Tenant: id, Generation: docGeneration, SagaID: docSagaID, Password: pw})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	entries, next := readPGLog(t, logPath, off)
	// The system record and the canary are set up by the first call of
	// each agent process, under the setup lock and before the tenant lock:
	// split after the setup lock's release.
	split := len(entries)
	for i, e := range entries {
		if e.app == "tenantprov-pg-agent" && strings.Contains(e.sql, "pg_advisory_unlock") {
			split = i + 1
			break
		}
	}
	segments = append(segments,
		renderPGSegment("Once per agent process (first Provision, Verify or Deprovision): the system record, the canary database, PUBLIC's CONNECT revoked on the other databases", entries[:split]),
		renderPGSegment(fmt.Sprintf("Provision tenant %q, generation %d (store.cmd.postgres.provision)", docTenant, docGeneration), entries[split:]))
	off = next

	vresp, err := store.Verify(ctx, agent.VerifyRequest{Tenant: id, Generation: docGeneration, Credential: presp.Credential})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	_, off = readPGLog(t, logPath, off)

	if _, err := store.Provision(ctx, agent.ProvisionRequest{Tenant: id, Generation: docGeneration, SagaID: docSagaID, Password: mustGenerate(t)}); err != nil {
		t.Fatalf("re-provision: %v", err)
	}
	entries, off = readPGLog(t, logPath, off)
	segments = append(segments, renderPGSegment("Provision again, same generation (a redelivered command): the role is reset, with a new verifier", entries))

	if _, err := store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: id, Generation: docGeneration, SagaID: docSagaID}); err != nil {
		t.Fatalf("deprovision: %v", err)
	}
	entries, _ = readPGLog(t, logPath, off)
	segments = append(segments, renderPGSegment(fmt.Sprintf("Deprovision tenant %q (store.cmd.postgres.deprovision; also the compensation of a rollback)", docTenant), entries))
	b.set("postgres-sql", strings.Join(segments, "\n"))

	// The secrets-file block takes only the shape of this credential (its
	// secret values become placeholders), so the first one serves even
	// though the re-provision above replaced its password.
	b.setCred(events.StorePostgres, presp.Credential)
	resources.Store(events.StorePostgres, presp.Resources)
	checks.Store(events.StorePostgres, vresp.Checks)
}

func mustGenerate(t *testing.T) secret.String {
	t.Helper()
	pw, err := secret.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return pw
}

// --- Redis ---------------------------------------------------------------------

// respRecorder is a TCP proxy in front of redis-server that records every
// command a client sends, before forwarding it, so a command is recorded
// before its reply can reach the client.
type respRecorder struct {
	mu   sync.Mutex
	cmds [][]string
}

func (r *respRecorder) mark() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.cmds) }

func (r *respRecorder) since(i int) [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]string(nil), r.cmds[i:]...)
}

func startRESPProxy(t *testing.T, target string) (string, *respRecorder) {
	t.Helper()
	rec := &respRecorder{}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var connsMu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		connsMu.Lock()
		for _, c := range conns {
			c.Close()
		}
		connsMu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			connsMu.Lock()
			conns = append(conns, c, up)
			connsMu.Unlock()
			wg.Go(func() { _, _ = io.Copy(c, up); c.Close() })
			wg.Go(func() {
				defer up.Close()
				br := bufio.NewReader(c)
				for {
					args, raw, err := readRESPCommand(br)
					if err != nil {
						return
					}
					rec.mu.Lock()
					rec.cmds = append(rec.cmds, args)
					rec.mu.Unlock()
					if _, err := up.Write(raw); err != nil {
						return
					}
				}
			})
		}
	})
	return ln.Addr().String(), rec
}

// readRESPCommand reads one client command (an array of bulk strings).
func readRESPCommand(br *bufio.Reader) ([]string, []byte, error) {
	var raw bytes.Buffer
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, nil, err
	}
	raw.WriteString(line)
	if !strings.HasPrefix(line, "*") {
		return strings.Fields(line), raw.Bytes(), nil // inline command
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil {
		return nil, nil, err
	}
	args := make([]string, 0, n)
	for range n {
		hdr, err := br.ReadString('\n')
		if err != nil {
			return nil, nil, err
		}
		raw.WriteString(hdr)
		size, err := strconv.Atoi(strings.TrimSpace(hdr[1:]))
		if err != nil {
			return nil, nil, err
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(br, buf); err != nil {
			return nil, nil, err
		}
		raw.Write(buf)
		args = append(args, string(buf[:size]))
	}
	return args, raw.Bytes(), nil
}

var (
	hashRuleRE = regexp.MustCompile(`^#[0-9a-f]{64}$`)
	rfc3339RE  = regexp.MustCompile(`"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"`)
	// sha256JSONRE is a password hash in redis-agent's record.
	sha256JSONRE = regexp.MustCompile(`"sha256":"[0-9a-f]{64}"`)
)

// redisArg renders one argument as redis-cli would take it, normalised.
func redisArg(a string) string {
	if hashRuleRE.MatchString(a) {
		return "#<sha256(password)>"
	}
	a = rfc3339RE.ReplaceAllString(a, `"<now, RFC 3339>"`)
	a = sha256JSONRE.ReplaceAllString(a, `"sha256":"<sha256(password)>"`)
	if a == "" || strings.ContainsAny(a, " \"'{}") {
		return "'" + a + "'"
	}
	return a
}

// wrapCommand renders args as one command, wrapped at about width columns
// with an indented continuation.
func wrapCommand(args []string, width int) string {
	var out strings.Builder
	line := ""
	for _, a := range args {
		a = redisArg(a)
		switch {
		case line == "":
			line = a
		case len(line)+1+len(a) > width:
			out.WriteString(line + "\n")
			line = "    " + a
		default:
			line += " " + a
		}
	}
	out.WriteString(line)
	return out.String()
}

func renderRedis(title string, cmds [][]string) string {
	var out strings.Builder
	out.WriteString("# " + title + "\n")
	for _, c := range cmds {
		if len(c) == 0 {
			continue
		}
		switch strings.ToUpper(c[0]) {
		case "HELLO", "AUTH": // connection handshake: carries the admin password
			continue
		}
		out.WriteString(wrapCommand(c, 100) + "\n")
	}
	return out.String()
}

func genRedis(t *testing.T, b *docBlocks, resources, checks *sync.Map) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rs := testkit.StartRedis(t)
	proxy, rec := startRESPProxy(t, rs.Addr)
	store, err := redisstore.New(redisstore.Config{
		Addr: proxy, AdminUser: rs.AdminUser, AdminPassword: secret.String(rs.AdminPassword), PublicAddr: devRedisAddr,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	id := events.MustTenantID(docTenant)

	start := rec.mark()
	presp, err := store.Provision(ctx, agent.ProvisionRequest{Tenant: id, Generation: docGeneration, SagaID: docSagaID, Password: mustGenerate(t)})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	provision := rec.since(start)
	vresp, err := store.Verify(ctx, agent.VerifyRequest{Tenant: id, Generation: docGeneration, Credential: presp.Credential})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}

	// The tenant writes a key, so that deprovision has one to unlink.
	tenant := redis.NewClient(&redis.Options{Addr: rs.Addr, Username: presp.Credential.String(redisstore.CredUsername),
		Password: presp.Credential.Secret(redisstore.CredPassword).Reveal(), DisableIdentity: true})
	defer tenant.Close()
	if err := tenant.Set(ctx, id.RedisKeyPrefix()+"greeting", "hello", 0).Err(); err != nil {
		t.Fatalf("tenant SET: %v", err)
	}
	adminC := redis.NewClient(&redis.Options{Addr: rs.Addr, Username: rs.AdminUser, Password: rs.AdminPassword, DisableIdentity: true})
	defer adminC.Close()
	marker, err := adminC.HGet(ctx, redisstore.ManagedUsersKey, id.RedisUser()).Result()
	if err != nil {
		t.Fatalf("read the managed-users record: %v", err)
	}

	start = rec.mark()
	if _, err := store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: id, Generation: docGeneration, SagaID: docSagaID}); err != nil {
		t.Fatalf("deprovision: %v", err)
	}
	deprovision := rec.since(start)

	var setuser []string
	for _, c := range provision {
		if len(c) > 2 && strings.EqualFold(c[0], "ACL") && strings.EqualFold(c[1], "SETUSER") {
			setuser = c
		}
	}
	if setuser == nil {
		t.Fatal("provision sent no ACL SETUSER")
	}
	b.set("redis-acl", wrapCommand(setuser, 100))
	b.set("redis-commands", renderRedis(fmt.Sprintf("Provision tenant %q, generation %d (admin connection; HELLO/AUTH handshake omitted)", docTenant, docGeneration), provision)+"\n"+
		renderRedis(fmt.Sprintf("Deprovision tenant %q (after the tenant wrote %sgreeting)", docTenant, id.RedisKeyPrefix()), deprovision))
	var mb bytes.Buffer
	if err := json.Indent(&mb, []byte(sha256JSONRE.ReplaceAllString(rfc3339RE.ReplaceAllString(marker, `"<now, RFC 3339>"`), `"sha256":"<sha256(password)>"`)), "", "  "); err != nil {
		t.Fatal(err)
	}
	b.set("redis-marker", "HGET "+redisstore.ManagedUsersKey+" "+id.RedisUser()+"\n"+mb.String())

	b.setCred(events.StoreRedis, presp.Credential)
	resources.Store(events.StoreRedis, presp.Resources)
	checks.Store(events.StoreRedis, vresp.Checks)
}

// --- MinIO ---------------------------------------------------------------------

func genMinIO(t *testing.T, b *docBlocks, resources, checks *sync.Map) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	m := testkit.StartMinIO(t)
	var mu sync.Mutex
	var calls []string
	observe := func(call string, _ time.Duration, err error) {
		mu.Lock()
		defer mu.Unlock()
		calls = append(calls, call)
	}
	take := func() []string {
		mu.Lock()
		defer mu.Unlock()
		c := calls
		calls = nil
		return c
	}
	// Sequential: the same calls as the default (Optimized) sequence, one
	// after another, so that their order is reproducible.
	store, err := miniostore.New(miniostore.Config{
		Endpoint: m.Endpoint, RootUser: m.RootUser, RootPassword: secret.String(m.RootPassword), PublicEndpoint: devMinIO,
	}, miniostore.WithCallObserver(observe), miniostore.WithSequence(miniostore.Sequential))
	if err != nil {
		t.Fatal(err)
	}
	id := events.MustTenantID(docTenant)

	presp, err := store.Provision(ctx, agent.ProvisionRequest{Tenant: id, Generation: docGeneration, SagaID: docSagaID, Password: mustGenerate(t)})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	provCalls := take()
	vresp, err := store.Verify(ctx, agent.VerifyRequest{Tenant: id, Generation: docGeneration, Credential: presp.Credential})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	verifyCalls := take()

	admin, err := minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(m.RootUser, m.RootPassword, "")})
	if err != nil {
		t.Fatal(err)
	}
	tags, err := admin.GetBucketTagging(ctx, id.MinIOBucket())
	if err != nil {
		t.Fatalf("bucket tags: %v", err)
	}
	tm := tags.ToMap()
	var tagLines []string
	for k, v := range tm {
		tagLines = append(tagLines, k+"="+v)
	}
	sort.Strings(tagLines)
	obj, err := admin.GetObject(ctx, miniostore.SystemBucket, "tenants/"+docTenant+".json", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	recRaw, err := io.ReadAll(obj)
	obj.Close()
	if err != nil {
		t.Fatalf("system record: %v", err)
	}
	var rb bytes.Buffer
	if err := json.Indent(&rb, []byte(rfc3339RE.ReplaceAllString(string(recRaw), `"<now, RFC 3339>"`)), "", "  "); err != nil {
		t.Fatal(err)
	}
	b.set("minio-markers", "# bucket tags of "+id.MinIOBucket()+"\n"+strings.Join(tagLines, "\n")+"\n\n"+
		"# system record "+miniostore.SystemBucket+"/tenants/"+docTenant+".json\n"+rb.String())

	if _, err := store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: id, Generation: docGeneration, SagaID: docSagaID}); err != nil {
		t.Fatalf("deprovision: %v", err)
	}
	deprovCalls := take()
	b.set("minio-calls", wrapCalls("provision:   ", provCalls)+wrapCalls("verify:      ", verifyCalls)+wrapCalls("deprovision: ", deprovCalls))

	b.setCred(events.StoreMinIO, presp.Credential)
	resources.Store(events.StoreMinIO, presp.Resources)
	checks.Store(events.StoreMinIO, vresp.Checks)
}

// wrapCalls renders calls as "a → b → c" after label, wrapped at about
// 100 columns under the label.
func wrapCalls(label string, calls []string) string {
	var out strings.Builder
	line := label
	pad := strings.Repeat(" ", len(label))
	for i, c := range calls {
		tok := c
		if i < len(calls)-1 {
			tok += " →"
		}
		if len(line)+1+len(tok) > 100 && line != label && line != pad {
			out.WriteString(strings.TrimRight(line, " ") + "\n")
			line = pad
		}
		if line != label && line != pad {
			line += " "
		}
		line += tok
	}
	out.WriteString(line + "\n")
	return out.String()
}

// --- Qdrant --------------------------------------------------------------------

func genQdrant(t *testing.T, b *docBlocks, resources, checks *sync.Map) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	q := testkit.StartQdrant(t)
	cfg := qdrantstore.DefaultConfig()
	cfg.Host, cfg.GRPCPort, cfg.APIKey = q.Host, q.GRPCPort, secret.String(q.APIKey)
	cfg.PublicHost, cfg.PublicGRPCPort = devHost, devQdrantPort
	store, err := qdrantstore.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	id := events.MustTenantID(docTenant)
	presp, err := store.Provision(ctx, agent.ProvisionRequest{Tenant: id, Generation: docGeneration, SagaID: docSagaID, Password: mustGenerate(t)})
	if err != nil {
		t.Fatalf("provision: %v", err)
	}
	vresp, err := store.Verify(ctx, agent.VerifyRequest{Tenant: id, Generation: docGeneration, Credential: presp.Credential})
	if err != nil {
		t.Fatalf("verify: %v", err)
	}

	// The JWT: header and claims, volatile values normalised.
	tok := presp.Credential.Secret(qdrantstore.CredAPIKey).Reveal()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("api_key is not a JWT")
	}
	decode := func(s string) map[string]any {
		raw, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	header, claims := decode(parts[0]), decode(parts[1])
	iat, _ := claims["iat"].(float64)
	exp, _ := claims["exp"].(float64)
	if got := time.Duration(exp-iat) * time.Second; got != cfg.TokenTTL {
		t.Errorf("exp - iat = %s, want QDRANT_TOKEN_TTL %s", got, cfg.TokenTTL)
	}
	claims["iat"] = "<issued at, Unix seconds>"
	claims["exp"] = fmt.Sprintf("<iat + QDRANT_TOKEN_TTL (%s = %d s)>", cfg.TokenTTL, int64(cfg.TokenTTL/time.Second))
	var tokenID string
	if ve, ok := claims["value_exists"].(map[string]any); ok {
		if ms, ok := ve["matches"].([]any); ok {
			for _, x := range ms {
				if mm, ok := x.(map[string]any); ok && mm["key"] == "token_id" {
					tokenID, _ = mm["value"].(string)
					mm["value"] = "<token_id: random UUID v4>"
				}
			}
		}
	}
	if tokenID == "" {
		t.Fatal("the JWT has no value_exists token_id match")
	}
	b.set("qdrant-claims", "# header\n"+plainJSON(t, header, "")+"# claims (payload)\n"+plainJSON(t, claims, "  "))

	// The collection and tenantprov's points, read with the admin key.
	c := q.Client(t, "")
	admin := metadata.AppendToOutgoingContext(ctx, "api-key", q.APIKey)
	info, err := c.GetCollectionInfo(admin, id.QdrantCollection())
	if err != nil {
		t.Fatal(err)
	}
	p := info.GetConfig().GetParams().GetVectorsConfig().GetParams()
	meta := map[string]any{}
	for k, v := range info.GetConfig().GetMetadata() {
		meta[k] = protoValue(v)
	}
	colJSON, _ := json.MarshalIndent(map[string]any{
		"collection_name": id.QdrantCollection(),
		"vectors_config":  map[string]any{"size": p.GetSize(), "distance": p.GetDistance().String()},
		"metadata":        meta,
	}, "", "  ")
	b.set("qdrant-collection", string(colJSON)+"\n")

	pts, err := c.Scroll(admin, &qdrant.ScrollPoints{CollectionName: events.QdrantSystemCollection, Limit: qdrant.PtrOf(uint32(100)), WithPayload: qdrant.NewWithPayload(true)})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, pt := range pts {
		pl := map[string]any{}
		for k, v := range pt.GetPayload() {
			pl[k] = protoValue(v)
		}
		if pl["tenant"] != docTenant {
			continue
		}
		pid := pt.GetId().GetUuid()
		if pid == tokenID {
			pid = "<token_id>"
			pl["token_id"] = "<token_id>"
		}
		if _, ok := pl["created_at"]; ok {
			pl["created_at"] = "<now, RFC 3339>"
		}
		if _, ok := pl["expires_at"]; ok {
			pl["expires_at"] = "<the JWT's exp, Unix seconds>"
		}
		lines = append(lines, fmt.Sprintf("id %s  payload %s", pid, strings.TrimSuffix(plainJSON(t, pl, ""), "\n")))
	}
	sort.Strings(lines)
	b.set("qdrant-system-points", strings.Join(lines, "\n")+"\n")

	if _, err := store.Deprovision(ctx, agent.DeprovisionRequest{Tenant: id, Generation: docGeneration, SagaID: docSagaID}); err != nil {
		t.Fatalf("deprovision: %v", err)
	}
	b.setCred(events.StoreQdrant, presp.Credential)
	res := map[string]string{}
	for k, v := range presp.Resources {
		res[k] = v
	}
	resources.Store(events.StoreQdrant, res)
	checks.Store(events.StoreQdrant, vresp.Checks)
}

// plainJSON marshals v without HTML escaping (placeholders keep their
// angle brackets), indented by indent ("" for one line), with a newline.
func plainJSON(t *testing.T, v any, indent string) string {
	t.Helper()
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if indent != "" {
		enc.SetIndent("", indent)
	}
	if err := enc.Encode(v); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// protoValue turns a Qdrant payload value into plain Go.
func protoValue(v *qdrant.Value) any {
	switch k := v.GetKind().(type) {
	case *qdrant.Value_StringValue:
		return k.StringValue
	case *qdrant.Value_IntegerValue:
		return k.IntegerValue
	case *qdrant.Value_DoubleValue:
		return k.DoubleValue
	case *qdrant.Value_BoolValue:
		return k.BoolValue
	case *qdrant.Value_StructValue:
		m := map[string]any{}
		for kk, vv := range k.StructValue.GetFields() {
			m[kk] = protoValue(vv)
		}
		return m
	case *qdrant.Value_ListValue:
		var l []any
		for _, vv := range k.ListValue.GetValues() {
			l = append(l, protoValue(vv))
		}
		return l
	}
	return nil
}

// --- per-store summaries and the secrets file ------------------------------------

// randomNameRE matches the random part of the probe names in check details.
var randomNameRE = regexp.MustCompile(`(tenantprov[-_]probe[-_])[0-9a-f]{12,}`)

func genPerStore(t *testing.T, b *docBlocks, resources, checks *sync.Map) {
	var rb, cb strings.Builder
	cb.WriteString(fmt.Sprintf("%-9s %-23s %-6s %s\n", "store", "check", "passed", "detail"))
	for _, st := range events.Stores() {
		r, _ := resources.Load(st)
		res, _ := r.(map[string]string)
		rj, _ := json.MarshalIndent(res, "", "  ")
		fmt.Fprintf(&rb, "%q: %s\n", st, rj)
		c, _ := checks.Load(st)
		cs, _ := c.([]events.Check)
		for _, ch := range cs {
			if !ch.Passed {
				t.Errorf("%s check %s did not pass: %s", st, ch.Name, ch.Detail)
			}
			detail := randomNameRE.ReplaceAllString(ch.Detail, "${1}<random>")
			if detail == "" {
				detail = "-"
			}
			fmt.Fprintf(&cb, "%-9s %-23s %-6t %s\n", st, ch.Name, ch.Passed, detail)
		}
	}
	b.set("resources", rb.String())
	b.set("verify-checks", cb.String())
}

var (
	sopsEncRE     = regexp.MustCompile(`ENC\[AES256_GCM,data:[^,]*,iv:[^,]*,tag:[^,]*,type:(\w+)\]`)
	ageArmorRE    = regexp.MustCompile(`(?m)^( *)-----BEGIN AGE ENCRYPTED FILE-----\n(?s:.*?)-----END AGE ENCRYPTED FILE-----`)
	ageRecipRE    = regexp.MustCompile(`age1[0-9a-z]{58}`)
	sopsLastModRE = regexp.MustCompile(`lastmodified: "[^"]*"`)
)

func genSecretsFile(t *testing.T, b *docBlocks) {
	f := &sealer.File{TenantID: docTenant, Generation: docGeneration}
	for _, st := range events.Stores() {
		plain, err := json.Marshal(b.creds[st].Plain())
		if err != nil {
			t.Fatal(err)
		}
		if err := f.SetSection(st, plain); err != nil {
			t.Fatal(err)
		}
	}
	pgPassword := f.Postgres.Password
	if pgPassword == "" || !strings.Contains(f.Postgres.URL, pgPassword) {
		t.Fatal("the postgres section has no password, or its url does not carry it")
	}
	for _, v := range []*string{&f.MinIO.SecretKey, &f.Postgres.Password, &f.Redis.Password} {
		if *v == "" {
			t.Fatal("a store's credential section lacks its secret")
		}
		*v = docPlaceholder
	}
	f.Postgres.URL = strings.Replace(f.Postgres.URL, pgPassword, docPlaceholder, 1)
	if f.Qdrant.APIKey == "" {
		t.Fatal("the qdrant section has no api_key")
	}
	f.Qdrant.APIKey = "<JWT>"

	cp, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	op, err := age.GenerateX25519Identity()
	if err != nil {
		t.Fatal(err)
	}
	sl, err := sealer.New(cp.Recipient().String(), op.Recipient().String())
	if err != nil {
		t.Fatal(err)
	}
	sealed, _, err := sl.Seal(f)
	if err != nil {
		t.Fatal(err)
	}
	// The readable block is what `sops -d` (and `tenantctl secrets get`,
	// which uses the same library) prints for the sealed file, decrypted
	// with the operator's key.
	keyFile := filepath.Join(t.TempDir(), "operator.agekey")
	if err := os.WriteFile(keyFile, []byte(op.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOPS_AGE_KEY_FILE", keyFile)
	t.Setenv("SOPS_AGE_KEY", "")
	plain, err := decrypt.DataWithFormat(sealed, formats.Yaml)
	if err != nil {
		t.Fatalf("sops decrypt with the operator key: %v", err)
	}
	var back sealer.File
	if err := yaml.Unmarshal(plain, &back); err != nil || back != *f {
		t.Fatalf("the decrypted secrets file does not read back as the sealed one (%v)", err)
	}
	b.set("secrets-file", string(plain))

	s := string(sealed)
	s = sopsEncRE.ReplaceAllString(s, "ENC[AES256_GCM,data:…,iv:…,tag:…,type:$1]")
	s = ageArmorRE.ReplaceAllString(s, "${1}-----BEGIN AGE ENCRYPTED FILE-----\n${1}…the SOPS data key, age-encrypted to this recipient…\n${1}-----END AGE ENCRYPTED FILE-----")
	s = strings.Replace(s, cp.Recipient().String(), "<control-plane recipient, age1…>", 1)
	s = strings.Replace(s, op.Recipient().String(), "<operator recipient, age1…>", 1)
	if ageRecipRE.MatchString(s) {
		t.Fatal("an age recipient was not normalised")
	}
	s = sopsLastModRE.ReplaceAllString(s, `lastmodified: "<now, RFC 3339>"`)
	b.set("secrets-file-sealed", s)
}
