package doctor

import (
	"fmt"

	"github.com/pelletier/go-toml"
)

// tomlDoc is a parsed TOML document.
type tomlDoc map[string]any

func parseTOML(data []byte) (tomlDoc, error) {
	doc := tomlDoc{}
	if err := toml.Unmarshal(data, (*map[string]any)(&doc)); err != nil {
		return nil, err
	}
	return doc, nil
}

// get returns the value at the key path, or nil.
func (d tomlDoc) get(keys ...string) any {
	var cur any = map[string]any(d)
	for _, k := range keys {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

func (d tomlDoc) str(keys ...string) string {
	s, _ := d.get(keys...).(string)
	return s
}

func (d tomlDoc) boolean(keys ...string) *bool {
	b, ok := d.get(keys...).(bool)
	if !ok {
		return nil
	}
	return &b
}

// strings returns a list of strings; set is false when the key is absent.
func (d tomlDoc) strings(keys ...string) (list []string, set bool) {
	v := d.get(keys...)
	if v == nil {
		return nil, false
	}
	items, _ := v.([]any)
	for _, it := range items {
		list = append(list, fmt.Sprint(it))
	}
	return list, true
}

// merge merges src into d the way containerd and CRI-O merge drop-in
// files: tables merge key by key, any other value of src replaces d's.
func (d tomlDoc) merge(src tomlDoc) {
	mergeMaps(d, src)
}

func mergeMaps(dst, src map[string]any) {
	for k, v := range src {
		sm, sok := v.(map[string]any)
		dm, dok := dst[k].(map[string]any)
		if sok && dok {
			mergeMaps(dm, sm)
			continue
		}
		dst[k] = v
	}
}
