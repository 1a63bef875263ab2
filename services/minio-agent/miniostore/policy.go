package miniostore

import (
	"encoding/json"
	"slices"
	"strings"
)

// Actions the tenant's canned policy grants: listing and location on its
// bucket, object read/write/delete and the multipart actions on its
// objects — nothing else (DESIGN.md §5). CreateMultipartUpload,
// UploadPart and CompleteMultipartUpload are authorised as s3:PutObject.
var (
	BucketActions = []string{"s3:GetBucketLocation", "s3:ListBucket", "s3:ListBucketMultipartUploads"}
	ObjectActions = []string{"s3:AbortMultipartUpload", "s3:DeleteObject", "s3:GetObject", "s3:ListMultipartUploadParts", "s3:PutObject"}
)

// DeniedActions are explicitly denied to the tenant. MinIO lets every user
// manage its own keys unless a policy explicitly denies it: it checks
// self-service calls in "deny only" mode, so an allow-list is not enough.
// Without this statement a tenant could create service accounts for
// itself (admin:CreateServiceAccount) — with any access key, such as
// tenant-<other id>, squatting another tenant's name — list its access keys
// (admin:ListServiceAccounts, on the bulk listing), read its own user
// (admin:GetUser) and change its own secret (admin:CreateUser). Denying
// admin:* closes all of them at once. Two self-service calls are not
// governed by any policy on MinIO: listing one's own service accounts
// (list-service-accounts without a user; with creation denied it is always
// empty) and STS AssumeRole (temporary keys that inherit this policy, deny
// included, expire, and are removed with the user).
var DeniedActions = []string{"admin:*"}

// policyDocument is an IAM policy in the JSON form MinIO accepts.
type policyDocument struct {
	Version   string            `json:"Version"`
	Statement []policyStatement `json:"Statement"`

	// variables is set by parsePolicy when a Resource holds a policy
	// variable ("${"): what such a policy reaches depends on who uses it,
	// so no_foreign_grants evaluates it per user. A document built
	// otherwise has it unset and is evaluated for anyone (which only
	// widens what it reaches).
	variables bool
}

// policyStatement is one statement. Action and Resource read both the
// string and the list form; the fields tenantprov never writes are kept so
// that a policy using them is not mistaken for one that does not.
type policyStatement struct {
	Effect      string          `json:"Effect"`
	Principal   json.RawMessage `json:"Principal,omitempty"`
	Action      stringList      `json:"Action,omitempty"`
	NotAction   stringList      `json:"NotAction,omitempty"`
	Resource    stringList      `json:"Resource,omitempty"`
	NotResource stringList      `json:"NotResource,omitempty"`
	Condition   json.RawMessage `json:"Condition,omitempty"`
}

// stringList is a JSON string or list of strings.
type stringList []string

func (l *stringList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*l = stringList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*l = many
	return nil
}

// TenantPolicy returns the canned policy every tenant's user holds
// (events.MinIOTenantPolicy): BucketActions on
// arn:aws:s3:::${aws:username}, ObjectActions on
// arn:aws:s3:::${aws:username}/*, and DeniedActions. MinIO replaces
// ${aws:username} with the requesting user's name — for a service account
// or a temporary key, its parent user's — so user tenant-<id> reaches
// bucket tenant-<id> and no other. (A client cannot choose that name:
// MinIO matches a resource with the first value it holds for a variable,
// its own, whatever a request adds in its query or headers;
// TestTenantCannotForgeItsUsername.) Which users hold the policy is what
// keeps it safe: no_foreign_grants judges it for each of them, with that
// user's name.
func TenantPolicy() []byte {
	arn := "arn:aws:s3:::${" + usernameVariable + "}"
	doc := policyDocument{
		Version: "2012-10-17",
		Statement: []policyStatement{
			{Effect: "Allow", Action: BucketActions, Resource: []string{arn}},
			{Effect: "Allow", Action: ObjectActions, Resource: []string{arn + "/*"}},
			{Effect: "Deny", Action: DeniedActions},
		},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		panic(err) // a fixed struct of strings always marshals
	}
	return b
}

// parsePolicy reads a policy document as MinIO returns it.
func parsePolicy(raw []byte) (policyDocument, error) {
	var d policyDocument
	err := json.Unmarshal(raw, &d)
	for _, st := range d.Statement {
		if slices.ContainsFunc(st.Resource, func(r string) bool { return strings.Contains(r, "${") }) {
			d.variables = true
		}
	}
	return d, err
}

// samePolicy reports whether a and b have the same version and the same
// statements, compared as sets of (effect, actions, resources); a
// statement with a principal, a condition or a Not- field never matches
// one without.
func samePolicy(a, b policyDocument) bool {
	norm := func(d policyDocument) []string {
		var out []string
		for _, s := range d.Statement {
			fields := []string{s.Effect, string(s.Principal), string(s.Condition)}
			for _, l := range []stringList{s.Action, s.NotAction, s.Resource, s.NotResource} {
				l = slices.Clone(l)
				slices.Sort(l)
				fields = append(fields, strings.Join(l, ","))
			}
			out = append(out, strings.Join(fields, "|"))
		}
		slices.Sort(out)
		return out
	}
	return a.Version == b.Version && slices.Equal(norm(a), norm(b))
}

// grantsBucket reports whether doc allows any S3 action on the bucket
// named by arn ("arn:aws:s3:::<bucket>") or on any object in it, to
// requests whose ${aws:username} is username (anyone: not one known name).
// It is deliberately broad: conditions are ignored, an Allow with
// NotAction or NotResource counts as granting, and wildcards in resources
// are matched as MinIO matches them ("*" and "?"), so "arn:aws:s3:::*",
// "arn:aws:s3:::tenant-*" and "*" all name every tenant's bucket.
//
// Policy variables in a resource are substituted first, as MinIO does
// before it matches: ${aws:username} becomes username, and every other
// variable — and ${aws:username} for anyone — becomes "*". The result is
// then matched with its wildcards, so a user named "tenant-*" holding
// "arn:aws:s3:::${aws:username}" reaches every tenant's bucket, as it does
// on MinIO. For anyone a policy grants at least what it grants to any one
// user.
func grantsBucket(doc policyDocument, arn, username string) bool {
	for _, st := range doc.Statement {
		if st.Effect != "Allow" {
			continue
		}
		if len(st.NotAction) == 0 && !slices.ContainsFunc(st.Action, isS3Action) {
			continue
		}
		if len(st.NotResource) > 0 {
			return true
		}
		for _, r := range st.Resource {
			r = substituteVariables(r, username)
			if wildcardMatch(r, arn) || wildcardMatchesPrefix(r, arn+"/") {
				return true
			}
		}
	}
	return false
}

// anyone stands, as the username of grantsBucket, for every requester:
// the members of a group, or a user whose ${aws:username} is not known.
const anyone = ""

// usernameVariable is the policy variable MinIO replaces with the
// requesting user's name — for a service account or a temporary key, its
// parent user's — spelled exactly as MinIO recognises it.
const usernameVariable = "aws:username"

// requestUsername returns what MinIO substitutes for ${aws:username} in
// the requests of the built-in user named user, or anyone when that is not
// known: a name with "=" or "," is an LDAP DN (built-in users cannot hold
// them), whose requests carry another name, and a name with "$" could
// itself form a variable that an older MinIO, substituting key by key,
// would replace again.
func requestUsername(user string) string {
	if user == "" || strings.ContainsAny(user, "=,$") {
		return anyone
	}
	return user
}

// substituteVariables replaces the policy variables "${...}" in pattern as
// grantsBucket describes. Like MinIO, it leaves a "${" with no closing "}"
// as it is.
func substituteVariables(pattern, username string) string {
	if strings.IndexByte(pattern, '$') < 0 {
		return pattern
	}
	i := strings.Index(pattern, "${")
	if i < 0 {
		return pattern
	}
	var b strings.Builder
	for ; i >= 0; i = strings.Index(pattern, "${") {
		end := strings.IndexByte(pattern[i:], '}')
		if end < 0 {
			break
		}
		b.WriteString(pattern[:i])
		if pattern[i+2:i+end] == usernameVariable && username != anyone {
			b.WriteString(username)
		} else {
			b.WriteByte('*')
		}
		pattern = pattern[i+end+1:]
	}
	b.WriteString(pattern)
	return b.String()
}

// isS3Action reports whether an action pattern can name an S3 action.
func isS3Action(a string) bool {
	return wildcardMatchesPrefix(a, "s3:")
}

// wildcardMatch reports whether pattern ("*" any run, "?" one character)
// matches s entirely.
func wildcardMatch(pattern, s string) bool {
	return globMatch(pattern, s, false)
}

// wildcardMatchesPrefix reports whether pattern matches some string that
// begins with prefix.
func wildcardMatchesPrefix(pattern, prefix string) bool {
	return globMatch(pattern, prefix, true)
}

// globMatch matches pattern against s (or, if open, against s followed by
// anything) by dynamic programming over positions, so that no pattern
// costs more than len(pattern)×len(s) steps.
func globMatch(pattern, s string, open bool) bool {
	// The pattern's literal prefix must agree with s: this settles most
	// patterns (other tenants' buckets) without the matcher below.
	lit := pattern
	if i := strings.IndexAny(pattern, "*?"); i >= 0 {
		lit = pattern[:i]
	} else if open {
		return strings.HasPrefix(pattern, s)
	} else {
		return pattern == s
	}
	if !strings.HasPrefix(s, lit) && !(open && strings.HasPrefix(lit, s)) {
		return false
	}
	return globMatchDP(pattern, s, open)
}

// globMatchDP is globMatch without the literal-prefix shortcut.
func globMatchDP(pattern, s string, open bool) bool {
	p := []rune(pattern)
	r := []rune(s)
	// m[j] reports whether p[:i] matches r[:j], row by row over i.
	m := make([]bool, len(r)+1)
	m[0] = true
	for i := 1; i <= len(p); i++ {
		next := make([]bool, len(r)+1)
		switch p[i-1] {
		case '*':
			next[0] = m[0]
			for j := 1; j <= len(r); j++ {
				next[j] = m[j] || next[j-1]
			}
		default:
			for j := 1; j <= len(r); j++ {
				next[j] = m[j-1] && (p[i-1] == '?' || p[i-1] == r[j-1])
			}
		}
		if open && next[len(r)] {
			// p[:i] covers all of s; whatever follows in the pattern
			// can match the free tail.
			return true
		}
		if open && m[len(r)] {
			return true
		}
		m = next
	}
	return m[len(r)]
}
