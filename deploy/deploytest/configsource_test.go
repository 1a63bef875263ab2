package deploytest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// modulePrefix is the import path prefix of the workspace's own packages;
// the rest of the path is the package's directory under the workspace root.
const modulePrefix = "github.com/tenantprov/tenantprov/"

// envVar is one environment variable a service's configuration reads.
type envVar struct {
	// Secret is true when the field is a secret.String: it must arrive as
	// NAME_FILE from a mounted Secret, never as a plain value.
	Secret bool
}

// serviceReads returns the environment variables the Config struct of
// services/<name>/main.go reads, nested and embedded structs included, by
// reading the source: the Config types live in package main and internal
// packages that no other module can import. It fails the test if it finds
// none (the struct moved), so the check cannot pass vacuously.
func serviceReads(t *testing.T, name string) map[string]envVar {
	t.Helper()
	r := &configReader{t: t, root: root(t), pkgs: map[string]*parsedPackage{}}
	out := map[string]envVar{}
	r.walkType(filepath.Join("services", name), "Config", out, 0)
	if len(out) == 0 {
		t.Fatalf("services/%s: found no env-tagged fields in its Config struct", name)
	}
	return out
}

// requiredByComposeTest returns the variables services/<name>/compose_test.go
// passes to composetest.CheckService as required: the same list the compose
// check uses, so the two deployments cannot disagree on it.
func requiredByComposeTest(t *testing.T, name string) []string {
	t.Helper()
	file := filepath.Join(root(t), "services", name, "compose_test.go")
	f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
	if err != nil {
		return nil
	}
	var req []string
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || sel.Sel.Name != "CheckService" {
			return true
		}
		for _, a := range call.Args {
			if lit, ok := a.(*ast.BasicLit); ok && lit.Kind == token.STRING {
				s, _ := strconv.Unquote(lit.Value)
				if strings.ToUpper(s) == s && !strings.Contains(s, "/") {
					req = append(req, s)
				}
			}
		}
		return true
	})
	return req
}

type parsedPackage struct {
	files []*ast.File
}

type configReader struct {
	t    *testing.T
	root string
	pkgs map[string]*parsedPackage
}

func (r *configReader) pkg(dir string) *parsedPackage {
	if p, ok := r.pkgs[dir]; ok {
		return p
	}
	files, err := filepath.Glob(filepath.Join(r.root, dir, "*.go"))
	if err != nil {
		r.t.Fatal(err)
	}
	p := &parsedPackage{}
	fset := token.NewFileSet()
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			r.t.Fatalf("parse %s: %v", file, err)
		}
		p.files = append(p.files, f)
	}
	r.pkgs[dir] = p
	return p
}

// walkType adds the env tags of struct type name in package dir to out.
func (r *configReader) walkType(dir, name string, out map[string]envVar, depth int) {
	if depth > 8 {
		r.t.Fatalf("config types nest too deeply at %s.%s", dir, name)
	}
	for _, f := range r.pkg(dir).files {
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.TYPE {
				continue
			}
			for _, spec := range gd.Specs {
				ts := spec.(*ast.TypeSpec)
				if ts.Name.Name != name {
					continue
				}
				st, ok := ts.Type.(*ast.StructType)
				if !ok {
					return // a named non-struct type (e.g. ByteSize) carries no tags
				}
				r.walkStruct(dir, f, st, out, depth)
				return
			}
		}
	}
	r.t.Fatalf("type %s not found in %s", name, dir)
}

func (r *configReader) walkStruct(dir string, f *ast.File, st *ast.StructType, out map[string]envVar, depth int) {
	for _, field := range st.Fields.List {
		if field.Tag != nil {
			tag, _ := strconv.Unquote(field.Tag.Value)
			if env, _, _ := strings.Cut(reflect.StructTag(tag).Get("env"), ","); env != "" {
				out[env] = envVar{Secret: isSecretString(field.Type)}
				continue
			}
		}
		switch ft := field.Type.(type) {
		case *ast.Ident:
			if ft.Obj != nil || isLocalType(r.pkg(dir), ft.Name) {
				r.walkType(dir, ft.Name, out, depth+1)
			}
		case *ast.SelectorExpr:
			pkgIdent, ok := ft.X.(*ast.Ident)
			if !ok {
				continue
			}
			if imp := importPath(f, pkgIdent.Name); strings.HasPrefix(imp, modulePrefix) {
				r.walkType(strings.TrimPrefix(imp, modulePrefix), ft.Sel.Name, out, depth+1)
			}
		}
	}
}

func isLocalType(p *parsedPackage, name string) bool {
	for _, f := range p.files {
		if obj := f.Scope.Lookup(name); obj != nil && obj.Kind == ast.Typ {
			return true
		}
	}
	return false
}

func isSecretString(e ast.Expr) bool {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok {
		return false
	}
	x, ok := sel.X.(*ast.Ident)
	return ok && x.Name == "secret" && sel.Sel.Name == "String"
}

// importPath returns the import path file f refers to as name.
func importPath(f *ast.File, name string) string {
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		if imp.Name != nil {
			if imp.Name.Name == name {
				return p
			}
			continue
		}
		if path.Base(p) == name {
			return p
		}
	}
	return ""
}

// The reader finds what the compose check finds by reflection, on a
// service whose Config this module can import piece by piece: the source
// reading is not missing nested structs.
func TestServiceReadsFindsNestedConfig(t *testing.T) {
	reads := serviceReads(t, "pg-agent")
	for _, want := range []string{"NATS_URL", "NATS_CREDS", "SHUTDOWN_TIMEOUT", "CONTROL_PLANE_RECIPIENT", "AGENT_ACK_WAIT", "PG_ADMIN_URL", "PG_SSLMODE"} {
		if _, ok := reads[want]; !ok {
			t.Errorf("pg-agent reads %s, but the source reader did not find it", want)
		}
	}
	if !reads["PG_ADMIN_URL"].Secret || reads["PG_SSLMODE"].Secret {
		t.Errorf("secret.String detection wrong: PG_ADMIN_URL %+v, PG_SSLMODE %+v", reads["PG_ADMIN_URL"], reads["PG_SSLMODE"])
	}
	sink := serviceReads(t, "audit-sink")
	if !sink["AUDIT_PG_URL"].Secret || !sink["AUDIT_PG_ADMIN_URL"].Secret {
		t.Errorf("audit-sink: %+v", sink)
	}
	if got := requiredByComposeTest(t, "minio-agent"); len(got) < 3 || got[0] != "NATS_URL" {
		t.Errorf("required variables from minio-agent's compose test: %q", got)
	}
}
