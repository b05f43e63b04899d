package chaos

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"net/url"
	"strings"
	"sync"

	"github.com/fileflow/fileflow/pkg/failure"
	"github.com/fileflow/fileflow/pkg/job"
	"github.com/fileflow/fileflow/pkg/ledger"
)

// content is one version of a file: its bytes, and what the pipeline must make of them.
type content struct {
	body   []byte
	outKey string // the output's key, without the output prefix ("" for poison)
	outSHA string // SHA-256 of the output's bytes
	code   string // the failure code a poison file must fail with ("" for a good file)
}

// Files come in three shapes, told by their key: ".txt" is copied as it is, ".log.gz" is
// gunzipped (its output drops ".gz") or, as poison, is not gzip at all (CorruptContent);
// ".exe" is poison the stage's rules reject (Rejected).
func makeContent(r *rand.Rand, key string, poison bool) content {
	size := 64 + r.IntN(2<<10)
	if r.IntN(50) == 0 {
		size = 32<<10 + r.IntN(96<<10)
	}
	plain := text(r, size, key)
	switch {
	case strings.HasSuffix(key, ".exe"):
		return content{body: append([]byte("MZ"), plain...), code: failure.Rejected}
	case strings.HasSuffix(key, ".gz") && poison:
		return content{body: plain, code: failure.Corrupt}
	case strings.HasSuffix(key, ".gz"):
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		_, _ = zw.Write(plain)
		_ = zw.Close()
		return content{body: b.Bytes(), outKey: strings.TrimSuffix(key, ".gz"), outSHA: sha(plain)}
	}
	return content{body: plain, outKey: key, outSHA: sha(plain)}
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// text is n bytes of words; it starts with the key so no two files share content.
func text(r *rand.Rand, n int, key string) []byte {
	words := []string{"file", "flow", "lambda", "queue", "bucket", "ledger", "retry", "batch", "chaos", "event", "commit", "kill"}
	var b bytes.Buffer
	b.WriteString(key)
	fmt.Fprintf(&b, " %d\n", r.Uint64())
	for b.Len() < n {
		b.WriteString(words[r.IntN(len(words))])
		if r.IntN(12) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()
}

// fileName is the i-th file's key under dir: mostly ".txt", a share ".log.gz", and the
// poison ones ".exe" or a corrupt ".log.gz".
func fileName(r *rand.Rand, dir string, i int, poisonRate float64) (key string, poison bool) {
	poison = r.Float64() < poisonRate
	switch {
	case poison && r.IntN(2) == 0:
		return fmt.Sprintf("%sf%06d.exe", dir, i), true
	case poison:
		return fmt.Sprintf("%sf%06d-corrupt.log.gz", dir, i), true
	case r.IntN(5) == 0:
		return fmt.Sprintf("%sf%06d.log.gz", dir, i), false
	}
	return fmt.Sprintf("%sf%06d.txt", dir, i), false
}

// version is one write of a key, as S3 answered it.
type version struct {
	etag, versionID string
	content
	notified bool // written through the notifying endpoint: it has an S3 event
}

// input is one key of the ingest bucket the run wrote, with every version in order.
type input struct {
	key      string
	versions []version
	deleted  bool     // a delete (marker) came after the last version
	jobs     []string // the jobs whose listing includes it
}

func (in *input) newest() version { return in.versions[len(in.versions)-1] }

func (in *input) notified() bool {
	for _, v := range in.versions {
		if v.notified {
			return true
		}
	}
	return false
}

// member is an archive entry and what must become of it.
type member struct {
	zipKey, name string
	outSHA       string // "" for an entry that must fail
	code         string
}

// truth is what the run did: every write, delete and archive entry. It is what the
// pipeline's state is judged against.
type truth struct {
	mu      sync.Mutex
	inputs  map[string]*input
	members map[string]member // by unique name, <zip>!/<entry>
}

func newTruth() *truth { return &truth{inputs: map[string]*input{}, members: map[string]member{}} }

func (t *truth) wrote(key string, c content, etag, versionID string, notified bool, jobName string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	in := t.inputs[key]
	if in == nil {
		in = &input{key: key}
		t.inputs[key] = in
	}
	c.body = nil // not kept: the check needs only its digest
	in.versions = append(in.versions, version{etag: strings.Trim(etag, `"`), versionID: versionID, content: c, notified: notified})
	in.deleted = false
	if jobName != "" {
		in.jobs = append(in.jobs, jobName)
	}
}

func (t *truth) deletedKey(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if in := t.inputs[key]; in != nil {
		in.deleted = true
	}
}

func (t *truth) addMember(m member) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.members[m.zipKey+"!/"+m.name] = m
}

// jobPlan is one job the run submits, and what its end must look like.
type jobPlan struct {
	name string
	spec job.Spec
	// want are the statuses it may end with; reason, if set, must be in its reason.
	want   []ledger.JobStatus
	reason string
	// listed is the files it must list (-1: its listing changes while it runs, so
	// only consistency is checked); failed is how many files must fail.
	listed, failed int64
	files          []string // the keys it lists (prefix and manifest jobs)
	resubmit       bool     // submitted a second time, with the same spec
	conflict       bool     // then a different spec under its id, which must be refused
	viaUpload      bool     // submitted by uploading its spec under jobs/, twice
	changes        bool     // its prefix changes while it runs (adds, overwrites, deletes)
	cancelAt       int64    // cancel it once this many of its files succeeded (0: never)
	splitSHA       string   // a split job's input digest: its merged output's
	splitKey       string
}

// plan is the whole workload, decided by the seed before anything runs.
type plan struct {
	events []eventFile
	jobs   []*jobPlan
	// preload are the jobs' inputs, put before the jobs start (not notified).
	preload []preloadFile
	// archives are each archive job's entries.
	archives [][]member
}

type eventFile struct {
	key       string
	poison    bool
	overwrite int  // further versions written while the first may be in flight
	delete    bool // deleted right after it was written
}

type preloadFile struct {
	key     string
	c       content
	jobName string
}

// share returns n*f, at least lo.
func share(n int, f float64, lo int) int { return max(lo, int(float64(n)*f)) }

// makePlan divides cfg.Files among S3 events (half) and jobs of every kind.
func makePlan(cfg Config, ingest string) *plan {
	r := rand.New(rand.NewPCG(cfg.Seed, 0x91a2))
	p := &plan{}
	n := cfg.Files

	for i := range share(n, 0.5, 10) {
		key, poison := fileName(r, fmt.Sprintf("ev/d%02d/", i%50), i, cfg.PoisonRate)
		ef := eventFile{key: key, poison: poison}
		switch x := r.Float64(); {
		case x < cfg.OverwriteRate:
			ef.overwrite = 1 + r.IntN(2)
		case x < cfg.OverwriteRate+cfg.DeleteRate:
			ef.delete = true
		}
		p.events = append(p.events, ef)
	}

	jobsOf := max(1, n/20_000)
	addPrefix := func(name string, files int, dirs int, poisonRate float64) *jobPlan {
		jp := &jobPlan{name: name, spec: job.Spec{Kind: job.KindPrefix, Bucket: ingest, Key: name + "/", FilesPerTask: 10 + r.IntN(60)},
			want: []ledger.JobStatus{ledger.JobComplete}, listed: int64(files)}
		for i := range files {
			dir := fmt.Sprintf("%s/d%d/e%d/", name, i%dirs, (i/dirs)%3)
			key, poison := fileName(r, dir, i, poisonRate)
			c := makeContent(r, key, poison)
			if c.code != "" {
				jp.failed++
			}
			jp.files = append(jp.files, key)
			p.preload = append(p.preload, preloadFile{key: key, c: c, jobName: name})
		}
		p.jobs = append(p.jobs, jp)
		return jp
	}
	for j := range jobsOf {
		addPrefix(fmt.Sprintf("prefix-%d", j), share(n, 0.1/float64(jobsOf), 20), 7, cfg.PoisonRate)
		jp := addPrefix(fmt.Sprintf("changing-%d", j), share(n, 0.1/float64(jobsOf), 20), 5, cfg.PoisonRate)
		jp.changes, jp.listed, jp.failed = true, -1, 0
	}

	// Manifests: one CSV (S3 Batch Operations' shape, keys URL-encoded), one JSON lines
	// read in byte-range chunks; each with bad rows and a row naming a missing object.
	for j, format := range []string{"csv", "jsonl"} {
		name := fmt.Sprintf("manifest-%d", j)
		files := share(n, 0.075, 10)
		jp := &jobPlan{name: name, want: []ledger.JobStatus{ledger.JobComplete}}
		var m strings.Builder
		rows := 0
		for i := range files {
			key, poison := fileName(r, fmt.Sprintf("%s/k%d/", name, i%11), i, cfg.PoisonRate)
			c := makeContent(r, key, poison)
			if c.code != "" {
				jp.failed++
			}
			jp.files = append(jp.files, key)
			p.preload = append(p.preload, preloadFile{key: key, c: c, jobName: name})
			manifestRow(&m, format, ingest, key)
			rows++
			if r.IntN(200) == 0 || i == files/2 {
				badRow(&m, format, ingest)
				rows++
				jp.failed++
			}
		}
		manifestRow(&m, format, ingest, name+"/never-written.txt") // NoSuchKey
		rows++
		jp.failed++
		mkey := "manifests/" + name + "." + format
		p.preload = append(p.preload, preloadFile{key: mkey, c: content{body: []byte(m.String())}})
		jp.spec = job.Spec{Kind: job.KindManifest, Bucket: ingest, Key: mkey}
		if format == "jsonl" {
			jp.spec.ChunkBytes = int64(max(4<<10, m.Len()/8))
		}
		jp.listed = int64(rows)
		p.jobs = append(p.jobs, jp)
	}

	// Archives: entries in folders, one path-traversal entry (refused) and one corrupt
	// gzip entry (fails when processed).
	for j := range jobsOf {
		name := fmt.Sprintf("archive-%d", j)
		entries := share(n, 0.1/float64(jobsOf), 10)
		zkey := "archives/" + name + ".zip"
		jp := &jobPlan{name: name, want: []ledger.JobStatus{ledger.JobComplete}, spec: job.Spec{Kind: job.KindArchive, Bucket: ingest, Key: zkey}}
		var zb bytes.Buffer
		zw := zip.NewWriter(&zb)
		add := func(entry string, body []byte) {
			method := zip.Deflate
			if r.IntN(3) == 0 {
				method = zip.Store
			}
			w, _ := zw.CreateHeader(&zip.FileHeader{Name: entry, Method: method})
			_, _ = w.Write(body)
		}
		var ms []member
		for i := range entries {
			entry := fmt.Sprintf("e%d/item-%05d.txt", i%9, i)
			body := text(r, 64+r.IntN(1024), zkey+entry)
			add(entry, body)
			ms = append(ms, member{zipKey: zkey, name: entry, outSHA: sha(body)})
		}
		add("../../escape-"+name+".txt", []byte("must never be written"))
		ms = append(ms, member{zipKey: zkey, name: "../../escape-" + name + ".txt", code: failure.InvalidEntry})
		add("e0/broken.log.gz", []byte("not gzip"))
		ms = append(ms, member{zipKey: zkey, name: "e0/broken.log.gz", code: failure.Corrupt})
		_ = zw.Close()
		jp.listed, jp.failed = int64(len(ms)), 2
		p.preload = append(p.preload, preloadFile{key: zkey, c: content{body: zb.Bytes()}})
		p.archives = append(p.archives, ms)
		p.jobs = append(p.jobs, jp)
	}

	// Split jobs: JSON lines cut into line-aligned parts, merged back in order.
	for j := range 2 {
		name := fmt.Sprintf("split-%d", j)
		var b bytes.Buffer
		target := 96<<10 + min(n, 100_000)*40
		for i := 0; b.Len() < target; i++ {
			fmt.Fprintf(&b, `{"n":%d,"job":%q,"pad":"%s"}`+"\n", i, name, strings.Repeat("x", r.IntN(200)))
		}
		key := "splits/" + name + ".jsonl"
		parts := 3 + r.IntN(4)
		p.preload = append(p.preload, preloadFile{key: key, c: content{body: b.Bytes()}})
		p.jobs = append(p.jobs, &jobPlan{name: name, spec: job.Spec{Kind: job.KindSplit, Bucket: ingest, Key: key, Parts: parts},
			want: []ledger.JobStatus{ledger.JobComplete}, listed: int64(parts), splitSHA: sha(b.Bytes()), splitKey: key})
	}

	// Over its tolerance: a third of its files are rejected; it fails early.
	tol := addPrefix("tolerance", share(n, 0.025, 150), 6, 0)
	for i, key := range tol.files {
		if i%3 == 0 {
			nk := strings.TrimSuffix(strings.TrimSuffix(key, ".txt"), ".log.gz") + ".exe"
			tol.files[i] = nk
			p.preload[len(p.preload)-len(tol.files)+i] = preloadFile{key: nk, c: makeContent(r, nk, true), jobName: tol.name}
		}
	}
	tol.spec.Tolerate, tol.want, tol.reason, tol.listed, tol.failed = "5%", []ledger.JobStatus{ledger.JobFailed}, "over the tolerance", -1, 0

	// Cancelled while it runs (or, if it finished first, complete).
	cancel := addPrefix("cancel", share(n, 0.025, 60), 8, 0)
	cancel.want, cancel.listed, cancel.failed = []ledger.JobStatus{ledger.JobCancelled, ledger.JobComplete}, -1, 0
	cancel.cancelAt = int64(len(cancel.files) / 5)

	// A manifest that does not exist: the job fails with the reason.
	p.jobs = append(p.jobs, &jobPlan{name: "missing-manifest", spec: job.Spec{Kind: job.KindManifest, Bucket: ingest, Key: "manifests/not-there.csv"},
		want: []ledger.JobStatus{ledger.JobFailed}, reason: "manifests/not-there.csv", listed: -1})

	// Duplicate submissions: some jobs twice with the same spec, one with a conflicting
	// spec, one by uploading its spec (twice).
	for i, jp := range p.jobs {
		jp.spec.ID = fmt.Sprintf("chaos-%d-%s", cfg.Seed, jp.name)
		switch {
		case i == 0:
			jp.conflict, jp.resubmit = true, true
		case jp.name == "prefix-0" || (jp.spec.Kind == job.KindManifest && i%2 == 1):
			jp.viaUpload = true
		case r.IntN(3) == 0:
			jp.resubmit = true
		}
	}
	return p
}

func manifestRow(b *strings.Builder, format, bucket, key string) {
	if format == "csv" {
		fmt.Fprintf(b, "%s,%s\n", bucket, strings.ReplaceAll(url.QueryEscape(key), "%2F", "/"))
		return
	}
	fmt.Fprintf(b, "{\"bucket\":%q,\"key\":%q}\n", bucket, key)
}

func badRow(b *strings.Builder, format, bucket string) {
	if format == "csv" {
		fmt.Fprintf(b, "%s,\n", bucket) // no key
		return
	}
	b.WriteString("{not json\n")
}

// duplicated says, the same way every time for a key, whether its S3 events are
// delivered twice.
func duplicated(seed uint64, rate float64, key string) bool {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%s", seed, key)
	return float64(h.Sum64()%1_000_000)/1_000_000 < rate
}

func (t *truth) isPoison(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	in := t.inputs[key]
	return in != nil && in.newest().code != ""
}

// snapshot returns copies of the inputs and the members.
func (t *truth) snapshot() (map[string]*input, map[string]member) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ins := make(map[string]*input, len(t.inputs))
	for k, v := range t.inputs {
		c := *v
		c.versions = append([]version(nil), v.versions...)
		ins[k] = &c
	}
	ms := make(map[string]member, len(t.members))
	for k, v := range t.members {
		ms[k] = v
	}
	return ins, ms
}
