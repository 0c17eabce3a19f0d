#!/usr/bin/perl
#
# scripts/check_meta.pl CONTROL META.json
#
# One version source: the control file's default_version.  META.json must
# say the same, padded with ".0" to the three-part semantic version PGXN
# requires (1.0 -> 1.0.0), name the install script of that version, and
# require PostgreSQL 15 only (the code is written against 15's internals).
# Exits non-zero, saying what disagrees, otherwise.
use strict;
use warnings;
use JSON::PP;

my ($control, $meta) = @ARGV;
die "usage: $0 CONTROL META.json\n" unless defined $meta;

open my $cf, '<', $control or die "could not open \"$control\": $!\n";
my ($version) = map { /^\s*default_version\s*=\s*'([^']*)'/ ? $1 : () } <$cf>;
close $cf;
die "$control has no default_version\n" unless defined $version;
(my $extension = $control) =~ s{.*/|\.control$}{}g;

my $semver = $version;
$semver .= '.0' while ($semver =~ tr/.//) < 2;

open my $mf, '<', $meta or die "could not open \"$meta\": $!\n";
my $m = decode_json(do { local $/; <$mf> });
close $mf;

my @bad;
my $p = $m->{provides}{$extension};
push @bad, "version is \"$m->{version}\"" if ($m->{version} // '') ne $semver;
if (!$p)
{
	push @bad, "provides no \"$extension\"";
}
else
{
	push @bad, "provides version \"$p->{version}\""
	  if ($p->{version} // '') ne $semver;
	push @bad, "provides file \"$p->{file}\""
	  if ($p->{file} // '') ne "$extension--$version.sql";
}
my $pg = $m->{prereqs}{runtime}{requires}{PostgreSQL} // '';
push @bad, "requires PostgreSQL \"$pg\"" if $pg ne '>= 15.0.0, < 16.0.0';

die "META.json disagrees with $control (default_version '$version', "
  . "so \"$semver\", file \"$extension--$version.sql\", PostgreSQL "
  . "\">= 15.0.0, < 16.0.0\"): "
  . join('; ', @bad) . "\n"
  if @bad;
print "META.json agrees with $control: $version ($semver)\n";
