package fanout

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"

	"github.com/fileflow/fileflow/pkg/task"
)

// DefaultMaxBytes keeps a task message well under SQS's historical 256 KiB limit (the
// 1 MiB limit is not in every region yet), leaving room for attributes.
const DefaultMaxBytes = 240 << 10

// Packer packs files into task messages of at most MaxBytes and MaxFiles, and hands each
// finished message body to Emit. Its memory is one message (and a hash per message).
//
// A message's task id is a hash of its files (see [task.ContentID]), computed as they are
// packed and written after them: {"v":1,"job_id":…,"parent":…,"parent_run":…,
// "files":[…],"task_id":…}.
type Packer struct {
	JobID     string
	Parent    string // the fan-out task sending the messages
	ParentRun string // its run: the job counts the messages only if that run is counted
	MaxBytes  int    // default DefaultMaxBytes
	MaxFiles  int    // default 1000
	Emit      func(body []byte, files int) error

	buf      []byte
	head     []byte // the messages' header (the same for all)
	sum      hash.Hash
	seen     map[[sha256.Size]byte]int // content -> messages with it so far (occurrence)
	files    int
	Messages int // messages emitted
	Files    int // files packed
}

// tail is the longest end of a message: `],"task_id":"m` + 40 hex digits + `"}`.
const tail = 64

// header of every task message before its files.
func (p *Packer) header() []byte {
	if p.head != nil {
		return p.head
	}
	job, _ := json.Marshal(p.JobID)
	parent, _ := json.Marshal(p.Parent)
	run, _ := json.Marshal(p.ParentRun)
	p.head = fmt.Appendf(nil, `{"v":%d,"job_id":%s,"parent":%s,"parent_run":%s,"files":[`, task.Version, job, parent, run)
	return p.head
}

// Add packs one file, emitting the current message first if the file doesn't fit.
func (p *Packer) Add(f task.File) error {
	if p.MaxBytes == 0 {
		p.MaxBytes = DefaultMaxBytes
	}
	if p.MaxFiles == 0 {
		p.MaxFiles = 1000
	}
	entry, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("fanout: encode %s: %w", f, err)
	}
	if len(p.header())+len(entry)+tail > p.MaxBytes {
		return fmt.Errorf("fanout: %s alone is larger than a task message (%d bytes)", f, p.MaxBytes)
	}
	if p.files > 0 && (len(p.buf)+1+len(entry)+tail > p.MaxBytes || p.files >= p.MaxFiles) {
		if err := p.Flush(); err != nil {
			return err
		}
	}
	if p.files == 0 {
		p.buf = append(p.buf[:0], p.header()...)
		if p.sum == nil {
			p.sum = sha256.New()
		}
		p.sum.Reset()
	} else {
		p.buf = append(p.buf, ',')
	}
	p.buf = append(p.buf, entry...)
	p.sum.Write(entry)
	p.sum.Write([]byte{0})
	p.files++
	p.Files++
	return nil
}

// Flush emits the current message, if any.
func (p *Packer) Flush() error {
	if p.files == 0 {
		return nil
	}
	var content [sha256.Size]byte
	p.sum.Sum(content[:0])
	if p.seen == nil {
		p.seen = map[[sha256.Size]byte]int{}
	}
	occurrence := p.seen[content]
	p.seen[content]++
	p.buf = fmt.Appendf(p.buf, `],"task_id":%q}`, task.ContentID(p.Parent, "m", content[:], occurrence))
	if err := p.Emit(p.buf, p.files); err != nil {
		return err
	}
	p.Messages++
	p.files = 0
	p.buf = p.buf[:0]
	return nil
}
