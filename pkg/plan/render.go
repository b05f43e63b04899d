package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
)

// Table writes one line per resource: type, name and its scalar inputs.
func (g *Graph) Table(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tNAME\tKEY INPUTS")
	for _, r := range g.Resources {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Type, r.Name, KeyInputs(r))
	}
	return tw.Flush()
}

// KeyInputs summarizes a resource's scalar inputs (and a few nested settings), skipping
// tags, code and long documents.
func KeyInputs(r Resource) string {
	var parts []string
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for _, k := range sortedKeys(m) {
			v := m[k]
			name := prefix + k
			switch k {
			case "tags", "tagsAll", "code", "sourceCodeHash", "policy", "assumeRolePolicy", "dashboardBody", "variables", "__defaults":
				continue
			}
			switch t := v.(type) {
			case map[string]any:
				if len(prefix) < 40 {
					walk(name+".", t)
				}
			case []any:
				if len(t) > 0 && len(t) <= 4 {
					if s, ok := scalar(t[0]); ok && len(t) == 1 {
						parts = append(parts, name+"="+s)
					}
				}
			default:
				if s, ok := scalar(v); ok {
					parts = append(parts, name+"="+s)
				}
			}
		}
	}
	walk("", r.Inputs)
	s := strings.Join(parts, " ")
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

func scalar(v any) (string, bool) {
	switch t := v.(type) {
	case string:
		if len(t) > 60 || strings.HasPrefix(t, "{") {
			return "", false
		}
		return t, true
	case bool:
		return fmt.Sprint(t), true
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64), true
	}
	return "", false
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var nonID = regexp.MustCompile(`[^A-Za-z0-9_]`)

func nodeID(name string) string { return nonID.ReplaceAllString(name, "_") }

// Mermaid draws the architecture from the graph itself: notifications, redrive,
// event source mappings, and what each function's IAM policy lets it touch.
func (g *Graph) Mermaid() string {
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	byARN := map[string]Resource{}
	for _, r := range g.Resources {
		if arn, ok := r.State["arn"].(string); ok {
			byARN[arn] = r
		}
	}
	node := func(r Resource) string {
		id := nodeID(r.Name)
		switch r.Type {
		case "aws:s3/bucketV2:BucketV2":
			return fmt.Sprintf("%s[(\"S3 %s\")]", id, r.Name)
		case "aws:sqs/queue:Queue":
			return fmt.Sprintf("%s[[\"SQS %s\"]]", id, r.Name)
		case "aws:lambda/function:Function":
			return fmt.Sprintf("%s(\"λ %s\")", id, r.Name)
		case "aws:dynamodb/table:Table":
			return fmt.Sprintf("%s[(\"DynamoDB %s\")]", id, r.Name)
		case "aws:sns/topic:Topic":
			return fmt.Sprintf("%s>\"SNS %s\"]", id, r.Name)
		}
		return fmt.Sprintf("%s[\"%s\"]", id, r.Name)
	}
	declared := map[string]bool{}
	declare := func(r Resource) string {
		id := nodeID(r.Name)
		if !declared[id] {
			declared[id] = true
			b.WriteString("  " + node(r) + "\n")
		}
		return id
	}
	var lines []string
	edge := func(from, to Resource, label string) {
		f, t := declare(from), declare(to)
		if label == "" {
			lines = append(lines, fmt.Sprintf("  %s --> %s", f, t))
		} else {
			lines = append(lines, fmt.Sprintf("  %s -- \"%s\" --> %s", f, label, t))
		}
	}
	buckets := map[string]Resource{}
	functionsByRole := map[string]Resource{}
	for _, r := range g.Resources {
		switch r.Type {
		case "aws:s3/bucketV2:BucketV2":
			buckets[fmt.Sprint(r.State["bucket"])] = r
		case "aws:lambda/function:Function":
			functionsByRole[fmt.Sprint(r.Inputs["role"])] = r
		}
	}
	alarms := 0
	var alarmTopic Resource
	for _, r := range g.Resources {
		switch r.Type {
		case "aws:s3/bucketNotification:BucketNotification":
			src := buckets[fmt.Sprint(r.Inputs["bucket"])]
			if r.Inputs["eventbridge"] == true {
				lines = append(lines, fmt.Sprintf("  %s -- \"all events\" --> eventbridge{{\"EventBridge\"}}", declare(src)))
			}
			qs, _ := r.Inputs["queues"].([]any)
			for _, q := range qs {
				qm, _ := q.(map[string]any)
				if dst, ok := byARN[fmt.Sprint(qm["queueArn"])]; ok {
					label := "ObjectCreated"
					if p, _ := qm["filterPrefix"].(string); p != "" {
						label += " " + p + "*"
					}
					if s, _ := qm["filterSuffix"].(string); s != "" {
						label += " *" + s
					}
					edge(src, dst, label)
				}
			}
		case "aws:sqs/queue:Queue":
			if rp, ok := r.Inputs["redrivePolicy"].(string); ok {
				var p struct {
					DeadLetterTargetArn string `json:"deadLetterTargetArn"`
					MaxReceiveCount     int    `json:"maxReceiveCount"`
				}
				if json.Unmarshal([]byte(rp), &p) == nil {
					if dlq, ok := byARN[p.DeadLetterTargetArn]; ok {
						edge(r, dlq, fmt.Sprintf("after %d receives", p.MaxReceiveCount))
					}
				}
			}
		case "aws:lambda/eventSourceMapping:EventSourceMapping":
			src := byARN[fmt.Sprint(r.Inputs["eventSourceArn"])]
			target := fmt.Sprint(r.Inputs["functionName"])
			fn, ok := byARN[target]
			via := ""
			if ok && fn.Type == "aws:lambda/alias:Alias" {
				via = fmt.Sprintf(" (alias %v)", fn.Inputs["name"])
				ok = false
				for _, f := range g.OfType("aws:lambda/function:Function") {
					if f.State["name"] == fn.Inputs["functionName"] {
						fn, ok = f, true
					}
				}
			}
			if ok && src.Name != "" {
				batch, _ := r.Inputs["batchSize"].(float64)
				maxc, _ := r.Inputs["scalingConfig"].(map[string]any)["maximumConcurrency"].(float64)
				edge(src, fn, fmt.Sprintf("batches of %g, up to %g concurrent%s", batch, maxc, via))
			}
		case "aws:iam/rolePolicy:RolePolicy":
			var role Resource
			for _, rr := range g.OfType("aws:iam/role:Role") {
				if rr.State["name"] == r.Inputs["role"] {
					role = rr
				}
			}
			fn, ok := functionsByRole[fmt.Sprint(role.State["arn"])]
			if !ok {
				continue
			}
			for _, target := range policyTargets(fmt.Sprint(r.Inputs["policy"]), byARN) {
				if target.res.Type == "aws:sqs/queue:Queue" && strings.Contains(target.verbs, "ReceiveMessage") {
					continue // drawn as the mapping
				}
				if target.res.Type == "aws:cloudwatch/logGroup:LogGroup" {
					continue
				}
				edge(fn, target.res, target.verbs)
			}
		case "aws:cloudwatch/eventTarget:EventTarget":
			dst, ok := byARN[fmt.Sprint(r.Inputs["arn"])]
			if !ok {
				continue
			}
			for _, rule := range g.OfType("aws:cloudwatch/eventRule:EventRule") {
				if rule.State["name"] != r.Inputs["rule"] {
					continue
				}
				label := "EventBridge rule"
				if se, ok := rule.Inputs["scheduleExpression"].(string); ok {
					label = "schedule " + se
					if in, ok := r.Inputs["input"].(string); ok {
						label += ": " + strings.ReplaceAll(in, `"`, "'")
					}
				} else if p, ok := rule.Inputs["eventPattern"].(string); ok && strings.Contains(p, "Object Created") {
					label = "EventBridge Object Created"
					var pat struct {
						Detail struct {
							Object struct {
								Key []map[string]string `json:"key"`
							} `json:"object"`
						} `json:"detail"`
					}
					if json.Unmarshal([]byte(p), &pat) == nil {
						for _, k := range pat.Detail.Object.Key {
							for op, v := range k {
								label += " " + op + " " + v
							}
						}
					}
				}
				edge(rule, dst, label)
			}
		case "aws:cloudwatch/metricAlarm:MetricAlarm":
			alarms++
			if acts, ok := r.Inputs["alarmActions"].([]any); ok && len(acts) > 0 {
				alarmTopic = byARN[fmt.Sprint(acts[0])]
			}
		}
	}
	if alarms > 0 && alarmTopic.Name != "" {
		lines = append(lines, fmt.Sprintf("  alarms{{\"%d CloudWatch alarms\"}} --> %s", alarms, declare(alarmTopic)))
	}
	for _, l := range lines {
		b.WriteString(l + "\n")
	}
	return b.String()
}

type policyTarget struct {
	res   Resource
	verbs string
}

// policyTargets reads an IAM policy and returns the pipeline resources it grants actions
// on, with the actions (without service prefix) as a label.
func policyTargets(doc string, byARN map[string]Resource) []policyTarget {
	var p struct {
		Statement []struct {
			Action   []string `json:"Action"`
			Resource []string `json:"Resource"`
		} `json:"Statement"`
	}
	if json.Unmarshal([]byte(doc), &p) != nil {
		return nil
	}
	verbs := map[string][]string{}
	var order []string
	for _, s := range p.Statement {
		for _, res := range s.Resource {
			base := strings.TrimSuffix(strings.TrimSuffix(res, "/*"), ":*")
			if i := strings.Index(base, "/index/"); i > 0 {
				base = base[:i]
			}
			if _, ok := byARN[base]; !ok {
				continue
			}
			if _, seen := verbs[base]; !seen {
				order = append(order, base)
			}
			for _, a := range s.Action {
				_, verb, _ := strings.Cut(a, ":")
				verbs[base] = appendUnique(verbs[base], verb)
			}
		}
	}
	var out []policyTarget
	for _, arn := range order {
		out = append(out, policyTarget{byARN[arn], strings.Join(verbs[arn], ", ")})
	}
	return out
}

func appendUnique(s []string, v string) []string {
	for _, x := range s {
		if x == v {
			return s
		}
	}
	return append(s, v)
}
