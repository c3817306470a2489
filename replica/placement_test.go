package replica

import (
	"errors"
	"slices"
	"testing"
)

func TestPlacementFirstCreationStandsAndConflictsChangeNothing(t *testing.T) {
	p := NewPlacement()
	must := func(idx uint64, cmd []byte) {
		t.Helper()
		if err := p.Apply(idx, cmd); err != nil {
			t.Fatalf("apply at %d: %v", idx, err)
		}
	}
	must(1, EncodeNodeCmd(1, "127.0.0.1:4150"))
	must(2, EncodeCreateCmd("orders", Assignment{Replicas: 3, Members: []uint64{3, 1, 2}}))
	must(3, EncodeCreateCmd("orders", Assignment{Replicas: 3, Members: []uint64{4, 5, 6}}))
	a := p.Topics["orders"]
	if !slices.Equal(a.Members, []uint64{1, 2, 3}) || a.Created != 2 {
		t.Fatalf("assignment %+v, want the first creation's members 1,2,3 at index 2", a)
	}
	if GroupName("orders", a.Created) != "orders@2" {
		t.Fatalf("group name %q", GroupName("orders", a.Created))
	}
	if err := p.Apply(4, EncodeCreateCmd("orders", Assignment{Replicas: 5, Members: []uint64{1, 2, 3, 4, 5}})); !errors.Is(err, ErrTopicExists) {
		t.Fatalf("create with other replicas: %v, want ErrTopicExists", err)
	}
	for _, bad := range [][]byte{
		[]byte("{"),
		[]byte(`{"op":"create","topic":"x","replicas":2,"members":[1,1]}`),
		[]byte(`{"op":"create","topic":"x","replicas":3,"members":[1,2]}`),
		[]byte(`{"op":"replace","topic":"orders","old":9,"new":4}`),
		[]byte(`{"op":"replace","topic":"orders","old":1,"new":2}`),
		[]byte(`{"op":"teleport"}`),
	} {
		if err := p.Apply(5, bad); !errors.Is(err, ErrBadPlacementCmd) {
			t.Fatalf("%s: %v, want ErrBadPlacementCmd", bad, err)
		}
	}
	if _, ok := p.Topics["x"]; ok {
		t.Fatal("a refused create left a topic behind")
	}
	must(6, EncodeReplaceCmd("orders", 2, 7))
	if !slices.Equal(p.Topics["orders"].Members, []uint64{1, 3, 7}) {
		t.Fatalf("members after replace %v", p.Topics["orders"].Members)
	}
	b, err := p.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	q, err := UnmarshalPlacement(b)
	if err != nil || !slices.Equal(q.Topics["orders"].Members, []uint64{1, 3, 7}) || q.Nodes[1].Addr != "127.0.0.1:4150" {
		t.Fatalf("snapshot round trip: %+v %v", q, err)
	}
	must(7, EncodeDeleteCmd("orders"))
	if err := p.Apply(8, EncodeDeleteCmd("orders")); !errors.Is(err, ErrUnknownTopic) {
		t.Fatalf("second delete: %v", err)
	}
}

func TestChooseMembersPrefersSelfThenLeastLoaded(t *testing.T) {
	live := []uint64{10, 20, 30, 40}
	load := map[uint64]int{10: 5, 20: 0, 30: 1, 40: 0}
	got, err := ChooseMembers(live, load, 3, 10)
	if err != nil || !slices.Equal(got, []uint64{10, 20, 40}) {
		t.Fatalf("got %v %v, want self 10 then the unloaded 20 and 40", got, err)
	}
	got, _ = ChooseMembers(live, load, 2, 99) // self not live
	if !slices.Equal(got, []uint64{20, 40}) {
		t.Fatalf("got %v", got)
	}
	if _, err := ChooseMembers(live, load, 5, 10); !errors.Is(err, ErrNotEnoughNodes) {
		t.Fatalf("5 of 4: %v", err)
	}
	a := &Assignment{Replicas: 3, Members: []uint64{10, 20, 40}}
	if r := ChooseReplacement(a, live, load); r != 30 {
		t.Fatalf("replacement %d, want 30", r)
	}
	if r := ChooseReplacement(a, []uint64{10, 20, 40}, load); r != 0 {
		t.Fatalf("replacement without a spare node %d, want 0", r)
	}
}
