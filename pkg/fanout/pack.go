package fanout

import (
	"encoding/json"
	"fmt"

	"github.com/fileflow/fileflow/pkg/task"
)

// DefaultMaxBytes keeps a task message well under SQS's historical 256 KiB limit (the
// 1 MiB limit is not in every region yet), leaving room for attributes.
const DefaultMaxBytes = 240 << 10

// Packer packs files into task messages of at most MaxBytes and MaxFiles, and hands each
// finished message body to Emit. Its memory is one message.
type Packer struct {
	JobID    string
	Parent   string // the planning task sending the messages; their ids derive from it
	MaxBytes int    // default DefaultMaxBytes
	MaxFiles int    // default 1000
	Emit     func(body []byte, files int) error

	buf      []byte
	head     []byte // the current message's header
	headFor  int    // the message index head was made for; -1: none
	files    int
	Messages int // messages emitted
	Files    int // files packed
}

// header of the next task message before its files:
// {"v":1,"job_id":"…","task_id":"…","parent":"…","index":n,"files":[…]}.
func (p *Packer) header() []byte {
	if p.head != nil && p.headFor == p.Messages {
		return p.head
	}
	job, _ := json.Marshal(p.JobID)
	parent, _ := json.Marshal(p.Parent)
	id, _ := json.Marshal(task.ChildID(p.Parent, "m", p.Messages))
	p.head = fmt.Appendf(p.head[:0], `{"v":%d,"job_id":%s,"task_id":%s,"parent":%s,"index":%d,"files":[`, task.Version, job, id, parent, p.Messages)
	p.headFor = p.Messages
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
	if len(p.header())+len(entry)+2 > p.MaxBytes {
		return fmt.Errorf("fanout: %s alone is larger than a task message (%d bytes)", f, p.MaxBytes)
	}
	if p.files > 0 && (len(p.buf)+1+len(entry)+2 > p.MaxBytes || p.files >= p.MaxFiles) {
		if err := p.Flush(); err != nil {
			return err
		}
	}
	if p.files == 0 {
		p.buf = append(p.buf[:0], p.header()...)
	} else {
		p.buf = append(p.buf, ',')
	}
	p.buf = append(p.buf, entry...)
	p.files++
	p.Files++
	return nil
}

// Flush emits the current message, if any.
func (p *Packer) Flush() error {
	if p.files == 0 {
		return nil
	}
	p.buf = append(p.buf, ']', '}')
	if err := p.Emit(p.buf, p.files); err != nil {
		return err
	}
	p.Messages++
	p.files = 0
	p.buf = p.buf[:0]
	return nil
}
