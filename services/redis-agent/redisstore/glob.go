package redisstore

// globReaches reports whether the Redis glob pattern (an ACL key or channel
// pattern, matched by Redis's stringmatchlen) matches at least one string
// that begins with prefix — that is, whether a user holding the pattern can
// reach something under prefix. It errs on the side of true: a pattern it
// cannot parse the way Redis would (an unterminated class) is taken to
// reach everything.
//
// It follows Redis 7.0's stringmatchlen (case-sensitive): `*` any run of
// bytes, `?` any byte, `[...]` a class with `^` negation, `a-z` ranges
// (either order) and `\` escapes, `\` escaping any other byte (a trailing
// `\` is literal). The pattern is run as a set of positions over the bytes
// of prefix; if any position survives, the rest of the pattern can be
// satisfied by a suitable suffix (an empty class, which matches nothing, is
// treated as matching: conservative).
func globReaches(pattern, prefix string) bool {
	toks, ok := parseGlob(pattern)
	if !ok {
		return true
	}
	states := closure(toks, map[int]bool{0: true})
	for i := 0; i < len(prefix) && len(states) > 0; i++ {
		c := prefix[i]
		next := map[int]bool{}
		for st := range states {
			if st == len(toks) {
				continue // the pattern ended before the prefix did
			}
			switch t := toks[st]; {
			case t.star:
				next[st] = true
			case t.set[c]:
				next[st+1] = true
			}
		}
		states = closure(toks, next)
	}
	return len(states) > 0
}

// globToken is one element of a parsed glob: a star, or the set of bytes
// one position accepts (a literal, `?` or a class).
type globToken struct {
	star bool
	set  [256]bool
}

// closure adds to states every position reachable by letting stars match
// nothing.
func closure(toks []globToken, states map[int]bool) map[int]bool {
	for st := range states {
		for i := st; i < len(toks) && toks[i].star; i++ {
			states[i+1] = true
		}
	}
	return states
}

// parseGlob splits pattern into tokens as stringmatchlen reads it; ok is
// false for an unterminated class.
func parseGlob(p string) (toks []globToken, ok bool) {
	for i := 0; i < len(p); {
		var t globToken
		switch c := p[i]; c {
		case '*':
			t.star = true
			i++
		case '?':
			for b := range t.set {
				t.set[b] = true
			}
			i++
		case '[':
			i++
			negate := i < len(p) && p[i] == '^'
			if negate {
				i++
			}
			for {
				switch {
				case i >= len(p):
					return nil, false
				case p[i] == '\\' && i+1 < len(p):
					t.set[p[i+1]] = true
					i += 2
					continue
				case p[i] == ']':
					i++
				case i+2 < len(p) && p[i+1] == '-':
					lo, hi := p[i], p[i+2]
					if lo > hi {
						lo, hi = hi, lo
					}
					for b := int(lo); b <= int(hi); b++ {
						t.set[b] = true
					}
					i += 3
					continue
				default:
					t.set[p[i]] = true
					i++
					continue
				}
				break
			}
			if negate {
				for b := range t.set {
					t.set[b] = !t.set[b]
				}
			}
			empty := true
			for _, in := range t.set {
				empty = empty && !in
			}
			if empty {
				// Matches nothing in Redis; treated as matching anything
				// so that the answer stays conservative.
				for b := range t.set {
					t.set[b] = true
				}
			}
		case '\\':
			if i+1 < len(p) {
				i++
			}
			t.set[p[i]] = true
			i++
		default:
			t.set[c] = true
			i++
		}
		toks = append(toks, t)
	}
	return toks, true
}

// aclPatterns returns the key and channel patterns of one ACL LIST line
// ("user <name> <rule> …"), root and selectors alike, with allkeys and
// allchannels as `*`. Selectors are rendered in parentheses, and a pattern
// may itself contain a parenthesis, so for a token that begins with `(` or
// ends with `)` both readings are returned: the caller checks them all.
func aclPatterns(rules []string) (keys, channels []string) {
	for _, tok := range rules {
		variants := []string{tok}
		if t := trimSelector(tok); t != tok {
			variants = append(variants, t)
		}
		for _, v := range variants {
			switch {
			case v == "allkeys":
				keys = append(keys, "*")
			case v == "allchannels":
				channels = append(channels, "*")
			case len(v) > 0 && v[0] == '~':
				keys = append(keys, v[1:])
			case len(v) > 0 && v[0] == '%':
				// %R~, %W~, %RW~: the pattern follows the first '~'; a
				// malformed one reaches everything.
				pat := "*"
				for i := 1; i < len(v); i++ {
					if v[i] == '~' {
						pat = v[i+1:]
						break
					}
				}
				keys = append(keys, pat)
			case len(v) > 0 && v[0] == '&':
				channels = append(channels, v[1:])
			}
		}
	}
	return keys, channels
}

// trimSelector removes the parentheses a selector adds to its first and last
// rule.
func trimSelector(tok string) string {
	if len(tok) > 0 && tok[0] == '(' {
		tok = tok[1:]
	}
	if len(tok) > 0 && tok[len(tok)-1] == ')' {
		tok = tok[:len(tok)-1]
	}
	return tok
}
