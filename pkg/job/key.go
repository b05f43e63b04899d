package job

import (
	"fmt"
	"strings"

	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// FileKey is the one place a file's ledger record is derived: its key and the revision
// it names. A file is recorded under its name (an archive member's is the archive's key
// and its entry) in the key's own record, where the newest revision wins — so an S3
// event and a job's file of the same content share it, and a job skips files already
// committed. Two kinds of file belong to one job alone (Scope "job:<id>"): a split part
// (its output is the job's, merged at its end), and a job's file that names neither a
// version nor an ETag (a manifest row that says only "this key": a later job processes
// the key's content again).
func FileKey(f task.File, jobID string) (ledger.Key, ledger.Revision) {
	k := ledger.Key{Bucket: f.Bucket, Key: f.Name()}
	rev := ledger.Revision{VersionID: f.VersionID, ETag: strings.Trim(f.ETag, `"`), Sequencer: ledger.NormalizeSequencer(f.Sequencer)}
	switch {
	case f.Range != nil:
		k.Key = fmt.Sprintf("%s#bytes=%d-%d", f.Key, f.Range.Start, f.Range.End)
		k.Scope = "job:" + jobID
	case jobID != "" && rev.VersionID == "" && rev.ETag == "":
		k.Scope = "job:" + jobID
	}
	return k, rev
}
