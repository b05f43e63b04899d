package policy

import (
	"fmt"
	"path"
	"slices"
	"strings"
)

func oneQueuePolicy(rs []Resource) []Violation {
	var out []Violation
	for _, q := range ofType(rs, TypeQueue) {
		var names []string
		for _, p := range ofType(rs, TypeQueuePolicy) {
			if refersTo(p, "queueUrl", q, "url") {
				names = append(names, p.Name)
			}
		}
		if len(names) > 1 {
			out = append(out, violation("one-queue-policy", q, "%d queue policies (%s): each replaces the others", len(names), strings.Join(names, ", ")))
		}
	}
	return out
}

// arnMatches reports whether an IAM resource pattern ("*" and "?" wildcards) covers arn.
func arnMatches(pattern, arn string) bool {
	ok, err := path.Match(strings.ReplaceAll(pattern, "/", "\x00"), strings.ReplaceAll(arn, "/", "\x00"))
	return err == nil && ok
}

func actionMatches(pattern, action string) bool {
	ok, err := path.Match(strings.ToLower(pattern), strings.ToLower(action))
	return err == nil && ok
}

// allows reports whether a statement list allows action on arn.
func allows(sts []statement, action, arn string) bool {
	for _, s := range sts {
		if s.Effect != "Allow" {
			continue
		}
		actionOK := slices.ContainsFunc(strList(s.Action), func(a string) bool { return actionMatches(a, action) })
		resourceOK := slices.ContainsFunc(strList(s.Resource), func(r string) bool { return arnMatches(r, arn) })
		if actionOK && resourceOK {
			return true
		}
	}
	return false
}

func recursionConfig(rs []Resource) []Violation {
	var out []Violation
	for _, m := range ofType(rs, TypeESM) {
		q, fn, okQ, okF := mappingParts(rs, m)
		if !okQ || !okF {
			out = append(out, unlinkedMapping("recursion-config", m, okQ, okF)...)
			continue
		}
		allowed, unknownLoop := false, false
		for _, rc := range ofType(rs, TypeRecursion) {
			if refersTo(rc, "functionName", fn, "name") {
				switch v := rc.Props["recursiveLoop"]; {
				case v == "Allow":
					allowed = true
				case isUnknown(v):
					unknownLoop = true
				}
			}
		}
		if allowed {
			continue
		}
		role, ok := link(rs, fn, "role", TypeRole)
		if !ok {
			out = append(out, atApply("recursion-config", fn, "its role is unknown and linked to no role"))
			continue
		}
		queueARN, arnKnown := str(attr(q, "arn"))
		for _, rp := range ofType(rs, TypeRolePolicy) {
			if !refersTo(rp, "role", role, "name", "id") {
				continue
			}
			sts, known := parseDoc(rp.Props["policy"])
			switch {
			case !known || !arnKnown || unknownLoop:
				out = append(out, atApply("recursion-config", fn, "whether %s may send to its own queue %s is judged when its policy is known", fn.Name, q.Name))
			case allows(sts, "sqs:SendMessage", queueARN):
				out = append(out, violation("recursion-config", fn,
					"may send to its own trigger queue %s but has no recursion config of Allow: Lambda stops such a chain after ~16 hops", q.Name))
			}
		}
	}
	return out
}

func eventBridgeWiring(rs []Resource) []Violation {
	var out []Violation
	for _, t := range ofType(rs, TypeEventTarget) {
		q, ok := link(rs, t, "arn", TypeQueue)
		if !ok {
			if s, known := str(t.Props["arn"]); !known || strings.Contains(s, ":sqs:") {
				out = append(out, atApply("eventbridge-wiring", t, "the target's queue is unknown and linked to no queue"))
			}
			continue
		}
		rule, ok := link(rs, t, "rule", TypeEventRule)
		if !ok {
			out = append(out, violation("eventbridge-wiring", t, "targets queue %s but names no declared rule", q.Name))
			continue
		}
		ruleARN, ruleKnown := str(attr(rule, "arn"))
		queueARN, queueKnown := str(attr(q, "arn"))
		found, judged := false, false
		for _, p := range ofType(rs, TypeQueuePolicy) {
			if !refersTo(p, "queueUrl", q, "url") {
				continue
			}
			sts, known := parseDoc(p.Props["policy"])
			if !known || !ruleKnown || !queueKnown {
				found = true // linked by URN; the statement is judged when known
				continue
			}
			judged = true
			for _, s := range sts {
				principal := fmt.Sprint(s.Principal)
				if s.Effect == "Allow" && strings.Contains(principal, "events.amazonaws.com") && allows([]statement{s}, "sqs:SendMessage", queueARN) &&
					(fmt.Sprint(s.Condition["ArnEquals"]["aws:SourceArn"]) == ruleARN || fmt.Sprint(s.Condition["ArnLike"]["aws:SourceArn"]) == ruleARN) {
					found = true
				}
			}
		}
		switch {
		case !found && judged:
			out = append(out, violation("eventbridge-wiring", t, "queue %s's policy does not let events.amazonaws.com send for rule %s (aws:SourceArn)", q.Name, rule.Name))
		case !found:
			out = append(out, violation("eventbridge-wiring", t, "queue %s has no queue policy: EventBridge cannot deliver rule %s's events", q.Name, rule.Name))
		case !judged:
			out = append(out, atApply("eventbridge-wiring", t, "queue %s's policy statement for rule %s is judged when the ARNs are known", q.Name, rule.Name))
		}
	}
	for _, n := range ofType(rs, TypeNotification) {
		if n.Props["eventbridge"] != true {
			continue
		}
		b, ok := link(rs, n, "bucket", TypeBucket)
		if !ok {
			out = append(out, atApply("eventbridge-wiring", n, "its bucket is unknown and linked to no bucket"))
			continue
		}
		name, nameKnown := str(attr(b, "bucket"))
		matched := false
		for _, r := range ofType(rs, TypeEventRule) {
			p, known := str(r.Props["eventPattern"])
			if !known || !nameKnown {
				if refersTo(r, "eventPattern", b, "bucket") {
					matched = true // its pattern is built from this bucket's name
				}
				continue
			}
			if strings.Contains(p, `"aws.s3"`) && strings.Contains(p, `"`+name+`"`) {
				matched = true
			}
		}
		if !matched {
			out = append(out, violation("eventbridge-wiring", n, "bucket %s sends its events to EventBridge, but no rule matches them", b.Name))
		}
	}
	return out
}
