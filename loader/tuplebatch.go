package loader

import (
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	ipngbpf "github.com/ipng/ipng-stats/bpf"
)

// TupleBatchSize is how many 4-tuples one TupleBatch.Lookup looks up.
const TupleBatchSize = len(ipngbpf.TuplelookupIpngLookupBatch{}.Slot)

// TupleBatch looks up many 4-tuples in ipng_by_tuple with one bpf(2) call
// instead of one BPF_MAP_LOOKUP_ELEM each: the keys go into an array the
// process has memory-mapped, a syscall program (bpf/tuplelookup.c, attached
// to nothing) looks them up in the kernel when Lookup runs it with
// BPF_PROG_TEST_RUN, and the stamps come back in the same array. Adding keys
// and reading stamps make no system call and do not allocate. Not safe for
// concurrent use.
//
// A lookup by a BPF program sets the LRU entry's reference bit, which a
// lookup by bpf(2) does not: an entry that was read survives one more pass
// of the map's LRU than one that was not.
type TupleBatch struct {
	coll *ebpf.Collection
	prog *ebpf.Program
	mem  []byte
	b    *ipngbpf.TuplelookupIpngLookupBatch // in mem
	n    int
	opts ebpf.RunOptions
}

// NewTupleBatch loads the batch lookup program against the 4-tuple map. It
// needs CAP_BPF (and a kernel with syscall programs and bpf_loop, Linux
// 5.17+); callers fall back to LookupTuple when it fails. Close it after use.
func (m *Maps) NewTupleBatch() (*TupleBatch, error) {
	if m.ByTuple == nil {
		return nil, errNoTuples
	}
	if err := sameLayout(reflect.TypeFor[ipngbpf.TuplelookupIpngStamp](), reflect.TypeFor[ipngbpf.SockopsIpngStamp]()); err != nil {
		return nil, fmt.Errorf("batch lookup program: %w", err)
	}
	spec, err := ipngbpf.LoadTuplelookup()
	if err != nil {
		return nil, err
	}
	ms := spec.Maps[ipngbpf.TuplelookupMapIpngByTuple]
	ms.MaxEntries, ms.Flags = m.ByTuple.MaxEntries(), m.ByTuple.Flags()
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		MapReplacements: map[string]*ebpf.Map{ipngbpf.TuplelookupMapIpngByTuple: m.ByTuple}})
	if err != nil {
		return nil, fmt.Errorf("loading the batch lookup program: %w", err)
	}
	io := coll.Maps[ipngbpf.TuplelookupMapIpngLookupIo]
	size := (int(io.ValueSize()) + 7) &^ 7
	mem, err := unix.Mmap(io.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		coll.Close()
		return nil, fmt.Errorf("mapping %s: %w", ipngbpf.TuplelookupMapIpngLookupIo, err)
	}
	if size < int(unsafe.Sizeof(ipngbpf.TuplelookupIpngLookupBatch{})) {
		unix.Munmap(mem)
		coll.Close()
		return nil, errors.New("batch lookup program: the I/O array is smaller than its Go type")
	}
	return &TupleBatch{coll: coll, prog: coll.Programs[ipngbpf.TuplelookupProgIpngLookupTuples], mem: mem,
		b: (*ipngbpf.TuplelookupIpngLookupBatch)(unsafe.Pointer(&mem[0]))}, nil
}

// sameLayout reports an error unless a and b have the same size and fields
// at the same offsets with the same sizes (the program's copy of struct
// ipng_stamp against sockops.c's).
func sameLayout(a, b reflect.Type) error {
	if a.Size() != b.Size() || a.NumField() != b.NumField() {
		return fmt.Errorf("struct ipng_stamp of tuplelookup.c (%d bytes) differs from sockops.c's (%d bytes)", a.Size(), b.Size())
	}
	for i := range a.NumField() {
		fa, fb := a.Field(i), b.Field(i)
		if fa.Offset != fb.Offset || fa.Type.Size() != fb.Type.Size() {
			return fmt.Errorf("struct ipng_stamp of tuplelookup.c differs from sockops.c's at field %s", fb.Name)
		}
		if fa.Type.Kind() == reflect.Struct {
			if err := sameLayout(fa.Type, fb.Type); err != nil {
				return err
			}
		}
	}
	return nil
}

// Add queues a key and returns its index for Stamp, or -1 when the batch
// is full (TupleBatchSize keys) or closed.
func (b *TupleBatch) Add(netnsCookie uint64, local, remote netip.AddrPort) int {
	if b.n >= TupleBatchSize || b.b == nil {
		return -1
	}
	i := b.n
	k := tupleKey(netnsCookie, local, remote)
	b.b.Slot[i].Key = *(*ipngbpf.TuplelookupIpngTuple)(unsafe.Pointer(&k))
	b.b.Slot[i].Found = 0
	b.n++
	return i
}

// Len is the number of keys queued since the last Reset.
func (b *TupleBatch) Len() int { return b.n }

// Lookup looks the queued keys up, with one bpf(2) call.
func (b *TupleBatch) Lookup() error {
	if b.n == 0 {
		return nil
	}
	if b.b == nil {
		return errors.New("the batch lookup is closed")
	}
	b.b.N = uint32(b.n)
	if _, err := b.prog.Run(&b.opts); err != nil {
		return fmt.Errorf("running the batch lookup program: %w", err)
	}
	return nil
}

// Stamp copies the stamp found for key i of the last Lookup into s and
// reports whether there was one.
func (b *TupleBatch) Stamp(i int, s *Stamp) bool {
	if i < 0 || i >= b.n || b.b == nil || b.b.Slot[i].Found == 0 {
		return false
	}
	decodeStamp((*ipngbpf.SockopsIpngStamp)(unsafe.Pointer(&b.b.Slot[i].Stamp)), s)
	return true
}

// Reset empties the batch.
func (b *TupleBatch) Reset() { b.n = 0 }

// Close unloads the program and unmaps the array.
func (b *TupleBatch) Close() error {
	if b.mem == nil {
		return nil
	}
	b.b, b.n = nil, 0
	err := unix.Munmap(b.mem)
	b.mem = nil
	b.coll.Close()
	return err
}
