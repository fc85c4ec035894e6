package params

import (
	"errors"
	"fmt"
)

// Kinds of object a refusal can blame.
const (
	KindStorageClass = "StorageClass"
	KindClaim        = "PersistentVolumeClaim"
)

// Refusal is a validation failure together with the object at fault. It is
// the one type that decides how a refusal reads, so a problem in a claim never
// sends its user to the StorageClass (or the other way round). Every Refusal
// is ErrInvalid: permanent, and InvalidArgument over CSI.
type Refusal struct {
	Kind  string // KindStorageClass or KindClaim
	Name  string // the object: "namespace/name" for a claim; "" when unknown
	Field string // the claim's field or the parameter; "" when the whole object
	Err   error  // why
}

func (r *Refusal) Error() string {
	obj := r.Kind
	if r.Name != "" {
		obj += " " + r.Name
	}
	if r.Field != "" {
		obj += " (" + r.Field + ")"
	}
	return fmt.Sprintf("fix %s: %v", obj, r.Err)
}

func (r *Refusal) Unwrap() []error { return []error{ErrInvalid, r.Err} }

// ClaimRefusal blames a field of the claim; Blame adds the claim's name.
func ClaimRefusal(field string, err error) error {
	return &Refusal{Kind: KindClaim, Field: field, Err: err}
}

// Blame names the object at fault in an invalid-request error: the claim
// (namespace/name) for a claim refusal, else the StorageClass class. Other
// errors are returned unchanged.
func Blame(err error, claim, class string) error {
	var r *Refusal
	switch {
	case errors.As(err, &r):
		if r.Name == "" {
			if r.Kind == KindClaim {
				r.Name = claim
			} else {
				r.Name = class
			}
		}
		return err
	case errors.Is(err, ErrInvalid):
		return &Refusal{Kind: KindStorageClass, Name: class, Err: err}
	}
	return err
}
