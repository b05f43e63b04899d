package job

import (
	"fmt"
	"strings"

	"github.com/fileflow/fileflow/pkg/ledger"
	"github.com/fileflow/fileflow/pkg/task"
)

// FileKey is the one place a file's ledger record is derived: its key and the revision
// it names. A file is recorded under its name in the key's own record, where the newest
// revision wins — so an S3 event and a job's file of the same content share it, and a
// job skips files already committed. A file that names neither a version nor an ETag (a
// manifest row that says only "this key") gets its revision from the content its GET
// reads. An archive member is recorded under its unique name (the archive's key and its
// entry, see task.File.UniqueName), in a record of its own kind (ledger.ScopeMember), so
// neither an object named like a member nor a member of another archive shares it. A split part belongs to its job alone (its job scope): its output is the job's, merged at the job's end.
func FileKey(f task.File, jobID string) (ledger.Key, ledger.Revision) {
	k := ledger.Key{Bucket: f.Bucket, Key: f.Name()}
	rev := ledger.Revision{VersionID: f.VersionID, ETag: strings.Trim(f.ETag, `"`), Sequencer: ledger.NormalizeSequencer(f.Sequencer)}
	switch {
	case f.Range != nil:
		k.Key = fmt.Sprintf("%s#bytes=%d-%d", f.Key, f.Range.Start, f.Range.End)
		k.Scope = ledger.JobScope(jobID)
	case f.Member != nil:
		k.Key, k.Scope = f.UniqueName(), ledger.ScopeMember
	}
	return k, rev
}
