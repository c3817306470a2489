package nsqd

// idTable is the in-flight index by ID number: an open-addressing hash
// table with linear probing in Robin Hood order and backward-shift
// deletion, keys beside their messages. Every FIN looks a message up and removes it, and every delivery
// adds one; here each costs a multiply, a probe or two in one array and no
// hashing of the key's bytes (profiled while draining a backlog, Go's map
// with uint64 keys was still 30 % of nsqd's CPU, this is a few percent).
// The channel's lock guards it.
type idTable struct {
	slots []idSlot // a power of two long, or nil
	n     int
	mask  uint64 // len(slots) - 1
	shift uint   // log2(len(slots))
}

type idSlot struct {
	key uint64
	m   *Message // nil: empty slot
}

// idTableMin is the smallest table made. An emptied table is kept (a
// consumer that catches up empties it once per window, and would otherwise
// regrow it every time); the channel gives it back when it goes idle
// (inFlight.release).
const idTableMin = 16

// home is key's first slot. The low bits of the key pick it, so that the
// consecutive IDs of a batch land in consecutive slots: deliveries and the
// FINs that follow them in about the same order walk the table in
// sequence, not at random (profiled with a multiplicative hash, whose
// cache misses made the lookups a quarter of nsqd's CPU). Higher bits are
// folded in so that IDs whose low bits repeat (NSQ's: a per-millisecond
// sequence below a timestamp) still spread.
func (t *idTable) home(key uint64) int {
	return int((key ^ key>>t.shift ^ key>>(2*t.shift)) & t.mask)
}

// dist is how far slot i is from the home of the key it holds.
func (t *idTable) dist(i int, key uint64) int {
	return int((uint64(i) - uint64(t.home(key))) & t.mask)
}

// get returns the message with key, or nil.
func (t *idTable) get(key uint64) *Message {
	if t.n == 0 {
		return nil
	}
	i := t.home(key)
	for d := 0; ; d++ {
		s := &t.slots[i]
		if s.m == nil || t.dist(i, s.key) < d {
			return nil // key would have displaced this entry
		}
		if s.key == key {
			return s.m
		}
		i = (i + 1) & int(t.mask)
	}
}

// insert adds m under key, which must not be in the table. Robin Hood
// order: an entry further from its home takes the slot of one nearer to
// its own, so every entry sits at most a short way past its home and a run
// ends at the first entry that is at home.
func (t *idTable) insert(key uint64, m *Message) {
	if 2*(t.n+1) > len(t.slots) {
		t.resize(max(idTableMin, 2*len(t.slots)))
	}
	cur := idSlot{key, m}
	i := t.home(key)
	for d := 0; ; d++ {
		s := &t.slots[i]
		if s.m == nil {
			*s = cur
			t.n++
			return
		}
		if sd := t.dist(i, s.key); sd < d {
			cur, *s = *s, cur
			d = sd
		}
		i = (i + 1) & int(t.mask)
	}
}

// remove deletes key; it reports whether it was there.
func (t *idTable) remove(key uint64) bool {
	if t.n == 0 {
		return false
	}
	i := t.home(key)
	for d := 0; ; d++ {
		s := &t.slots[i]
		if s.m == nil || t.dist(i, s.key) < d {
			return false
		}
		if s.key == key {
			break
		}
		i = (i + 1) & int(t.mask)
	}
	// shift the rest of the run back by one, up to an empty slot or an
	// entry at its home
	for {
		j := (i + 1) & int(t.mask)
		s := t.slots[j]
		if s.m == nil || t.dist(j, s.key) == 0 {
			break
		}
		t.slots[i] = s
		i = j
	}
	t.slots[i] = idSlot{}
	t.n--
	return true
}

func (t *idTable) resize(size int) {
	old := t.slots
	t.slots = make([]idSlot, size)
	t.mask = uint64(size - 1)
	t.shift = 0
	for s := size; s > 1; s >>= 1 {
		t.shift++
	}
	t.n = 0
	for _, s := range old {
		if s.m != nil {
			t.insert(s.key, s.m)
		}
	}
}

// each calls fn for every message in the table.
func (t *idTable) each(fn func(m *Message)) {
	for _, s := range t.slots {
		if s.m != nil {
			fn(s.m)
		}
	}
}
