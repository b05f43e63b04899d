package policy

import (
	"github.com/pulumi/pulumi/sdk/v3/go/property"
)

// FromProperties converts a resource's Pulumi property map (as the policy engine passes
// it) into the plain values the rules read. Computed values become [Unknown]; secrets
// are read as their value (rules only compare shapes and settings).
func FromProperties(m property.Map) map[string]any {
	out := make(map[string]any, m.Len())
	for k, v := range m.All {
		out[k] = fromValue(v)
	}
	return out
}

func fromValue(v property.Value) any {
	switch {
	case v.IsComputed():
		return Unknown{}
	case v.IsNull():
		return nil
	case v.IsBool():
		return v.AsBool()
	case v.IsNumber():
		return v.AsNumber()
	case v.IsString():
		return v.AsString()
	case v.IsArray():
		arr := v.AsArray()
		out := make([]any, 0, arr.Len())
		for _, x := range arr.All {
			out = append(out, fromValue(x))
		}
		return out
	case v.IsMap():
		return FromProperties(v.AsMap())
	case v.IsAsset():
		return "asset"
	case v.IsArchive():
		return "archive"
	case v.IsResourceReference():
		return string(v.AsResourceReference().URN)
	default:
		return nil
	}
}
