package inventory

import "testing"

func TestNormalizeBusID(t *testing.T) {
	for in, want := range map[string]string{
		"00000000:3B:00.0": "0000:3b:00.0",
		"00000001:AF:00.1": "0001:af:00.1",
		"0000:3b:00.0":     "0000:3b:00.0",
		"":                 "",
	} {
		var raw [32]int8
		copy(raw[:], toInt8(in))
		if got := normalizeBusID(raw); got != want {
			t.Errorf("normalizeBusID(%q) = %q, want %q", in, got, want)
		}
	}
}

func toInt8(s string) []int8 {
	out := make([]int8, len(s))
	for i := range s {
		out[i] = int8(s[i])
	}
	return out
}
