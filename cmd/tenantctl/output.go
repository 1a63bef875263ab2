package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// Output formats (--output, -o).
const (
	outputText = "text"
	outputJSON = "json"
)

// How a command prints, the same for every command (one mechanism, set by
// the persistent --output/-o flag):
//
//   - g.emit(v, text): the command's result. With -o json, v as one JSON
//     document on stdout (indented; field names are the json tags of v and
//     stay stable); otherwise text(stdout) prints it for people.
//   - g.line(v, text): one item of a stream (watch, --wait progress). With
//     -o json, v as one compact JSON line; otherwise text(stdout).
//   - an error a command returns is printed by run: with -o json as one
//     JSON line on stderr, {"error": "...", "code": 4, "kind": "not_found"};
//     otherwise "tenantctl: ..." on stderr. The exit code is the same either
//     way.
//
// A command added in a new file needs nothing else: compute the result
// value, call g.emit with it and a text renderer, return errors made with
// fail(code, ...). g.json is true with -o json (or the older --json) for
// code that must branch.

// emit prints a command's result: v as one JSON document with -o json,
// otherwise text(stdout).
func (g *globals) emit(v any, text func(w io.Writer) error) error {
	if g.json {
		return g.printJSON(v)
	}
	return text(g.stdout)
}

// line prints one item of a stream: v as one compact JSON line with
// -o json, otherwise text(stdout).
func (g *globals) line(v any, text func(w io.Writer)) error {
	if g.json {
		return json.NewEncoder(g.stdout).Encode(v)
	}
	text(g.stdout)
	return nil
}

// printJSON writes v as one indented JSON document on stdout.
func (g *globals) printJSON(v any) error {
	enc := json.NewEncoder(g.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// resolveOutput checks --output and folds the older --json into it.
func (g *globals) resolveOutput() error {
	switch g.output {
	case outputText:
	case outputJSON:
		g.json = true
	default:
		return fail(exitUsage, "--output %q: want text or json", g.output)
	}
	if g.json {
		g.output = outputJSON
	}
	return nil
}

// errorDoc is what a failed command prints on stderr with -o json.
type errorDoc struct {
	Error string `json:"error"`
	Code  int    `json:"code"`
	Kind  string `json:"kind"`
}

// exitKind names an exit code in errorDoc.
func exitKind(code int) string {
	switch code {
	case exitFailed:
		return "failed"
	case exitUsage:
		return "usage"
	case exitTimeout:
		return "timeout"
	case exitNotFound:
		return "not_found"
	case exitUnavailable:
		return "unavailable"
	}
	return "error"
}

// report prints err on stderr, as JSON with -o json, and returns the exit
// code it stands for.
func (g *globals) report(err error) int {
	code := exitUsage // cobra's own errors are usage errors
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if g.json || g.output == outputJSON {
		if json.NewEncoder(g.stderr).Encode(errorDoc{Error: err.Error(), Code: code, Kind: exitKind(code)}) == nil {
			return code
		}
	}
	fmt.Fprintf(g.stderr, "tenantctl: %v\n", err)
	return code
}
