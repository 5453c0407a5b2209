package policy

import (
	"strings"
	"testing"
)

func TestDecide(t *testing.T) {
	drop := Default()
	anon := Default()
	anon.DNT, anon.GPC = Anonymize, Anonymize
	ignore := Default()
	ignore.DNT, ignore.GPC = Ignore, Ignore
	tests := []struct {
		name string
		p    Policy
		c    Choices
		want Outcome
		seen string
	}{
		{"no signals", drop, Choices{}, Keep, ""},
		{"dnt drops by default", drop, Choices{DNT: true}, DropDNT, "dnt"},
		{"gpc drops by default", drop, Choices{GPC: true}, DropGPC, "gpc"},
		{"dnt anonymizes", anon, Choices{DNT: true}, KeepAnonymized, "dnt"},
		{"gpc anonymizes", anon, Choices{GPC: true}, KeepAnonymized, "gpc"},
		{"ignored signals recorded", ignore, Choices{DNT: true, GPC: true}, Keep, "dnt,gpc"},
		{"cookie always drops", ignore, Choices{OptOutCookie: true}, DropOptOut, "optout_cookie"},
		{"registry always drops", anon, Choices{Registered: true}, DropOptOut, ""},
		{"opt-in overrides cookie and registry", drop, Choices{OptOutCookie: true, Registered: true, OptIn: true}, Keep, "optout_cookie,opt_in"},
		{"opt-in still subject to dnt", drop, Choices{OptIn: true, DNT: true}, DropDNT, "dnt,opt_in"},
		{"deleted beats everything", anon, Choices{Deleted: true, OptIn: true}, DropDeleted, "opt_in"},
		{"dnt drop wins over gpc anonymize", Policy{Version: 1, DNT: Drop, GPC: Anonymize}, Choices{DNT: true, GPC: true}, DropDNT, "dnt,gpc"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, seen := tt.p.Decide(tt.c)
			if got != tt.want || strings.Join(seen, ",") != tt.seen {
				t.Fatalf("got %v %v, want %v %q", got, seen, tt.want, tt.seen)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	s := DefaultSet()
	bad := Default()
	bad.GPC = "maybe"
	s.Projects = map[string]Policy{"shop": bad}
	if err := s.Validate(); err == nil || err.Error() != "privacy.policies.projects.shop.gpc must be drop, anonymize or ignore" {
		t.Fatalf("got %v", err)
	}
	if err := DefaultSet().Validate(); err != nil {
		t.Fatal(err)
	}
	s = DefaultSet()
	s.Default.Version = 0
	if err := s.Validate(); err == nil || !strings.Contains(err.Error(), "privacy.policies.default.version") {
		t.Fatalf("got %v", err)
	}
}

func TestFor(t *testing.T) {
	s := DefaultSet()
	p := Default()
	p.Version = 7
	s.Projects = map[string]Policy{"shop": p}
	if s.For("shop").Version != 7 || s.For("other").Version != 1 {
		t.Fatal("wrong policy chosen")
	}
}

func TestInherit(t *testing.T) {
	s := DefaultSet()
	s.Default.Geo = GeoCountry
	s.Projects = map[string]Policy{"shop": {DNT: Anonymize}}
	s.Inherit()
	p := s.For("shop")
	if p.DNT != Anonymize || p.GPC != Drop || p.Geo != GeoCountry || p.Version != 1 || len(p.URLQueryAllow) != 5 {
		t.Fatalf("inherited policy %+v", p)
	}
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
}
