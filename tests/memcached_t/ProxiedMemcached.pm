package ProxiedMemcached;
# Part of mcrouter-trio's tests (not of memcached): see README.md here.
#
# Loaded with `perl -I<this dir> -MProxiedMemcached t/<file>.t` before the test
# file's own `use MemcachedTest`: it loads memcached's unchanged
# t/lib/MemcachedTest.pm and replaces the subs that start a memcached from a
# build tree, so that every new_memcached() starts the installed memcached with
# the test's server arguments and `python -m mcrouter_trio` in front of it (a
# PoolRoute of that memcached, --enable-flush-cmd), and the handle's sockets
# talk to the proxy. The test then imports the replaced subs.
#
# Environment: MEMCACHED_BIN (default /usr/bin/memcached), MCROUTER_TRIO_PYTHON
# (the interpreter that runs the proxy, default python3), MEMCACHED_T_DIRECT=1
# (no proxy: the test talks to memcached itself, the baseline to compare with),
# MEMCACHED_T_SERVERS (how many memcached the pool holds, default 1),
# MEMCACHED_T_SERVER_ARGS (more memcached flags, split on spaces: -Z ...),
# MEMCACHED_T_SERVER_MECH (after each server's host:port in the config, as
# "ascii:ssl"), MCROUTER_TRIO_ARGS (more proxy flags, split on spaces).
use strict;
use warnings;
use FindBin qw($Bin);
use lib "$Bin/lib";
use IO::Socket::INET;
use POSIX ":sys_wait_h";
use Carp qw(croak);
use MemcachedTest ();

my $memcached_exe = $ENV{MEMCACHED_BIN} || "/usr/bin/memcached";
my $python = $ENV{MCROUTER_TRIO_PYTHON} || "python3";

sub _spawn {
    my @command = @_;
    my $pid = fork();
    croak("fork: $!") unless defined $pid;
    unless ($pid) {
        exec { $command[0] } @command;
        die "exec $command[0]: $!";
    }
    return $pid;
}

sub _connect_when_listening {
    my ($port, $pid, $what) = @_;
    for (1..400) {
        my $conn = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port");
        # free_port() picks from the ephemeral range, so a connect to a port
        # nobody listens on yet can be given that very port as its source:
        # TCP's simultaneous open then connects the socket to itself.
        return $conn if $conn && $conn->sockport != $port;
        # "Failed..." as MemcachedTest words it: item_size_max.t matches on it.
        croak("Failed to start: $what exited") if waitpid($pid, WNOHANG) != 0;
        select undef, undef, undef, 0.05;
    }
    croak("Failed to connect: $what is not listening on port $port");
}

no warnings 'redefine';

*MemcachedTest::get_memcached_exe = sub { return $memcached_exe };

# The extstore parts of the tests judge memcached's extstore by its `stats`
# counters, which describe one memcached; the proxy answers `stats` with its own.
*MemcachedTest::supports_extstore = sub { return 0 };

*MemcachedTest::new_memcached = sub {
    my ($args, $passed_port) = @_;
    my @server_args = (split(' ', defined $args ? $args : ""),
                       split(' ', $ENV{MEMCACHED_T_SERVER_ARGS} || ""));
    my $mech = $ENV{MEMCACHED_T_SERVER_MECH} ? ":$ENV{MEMCACHED_T_SERVER_MECH}" : "";
    push @server_args, "-u", "root" if $< == 0;
    # The proxy listens where the test asked for memcached; each memcached gets
    # a port of its own, loopback only, and no UDP port.
    my $proxy_port = $passed_port || MemcachedTest::free_port();
    my (@server_pids, @servers, %taken);
    $taken{$proxy_port} = 1;
    for (1 .. ($ENV{MEMCACHED_T_SERVERS} || 1)) {
        my $port = MemcachedTest::free_port();
        $port = MemcachedTest::free_port() while $taken{$port}++;
        my $pid = _spawn($memcached_exe, @server_args,
                         "-l", "127.0.0.1", "-p", $port, "-U", "0");
        push @server_pids, $pid;
        my $conn = eval { _connect_when_listening($port, $pid, "memcached") };
        unless ($conn) {
            _stop(@server_pids);
            croak($@);
        }
        if ($ENV{MEMCACHED_T_DIRECT}) {
            # The baseline: the same memcached, without the proxy.
            return Memcached::ProxiedHandle->new(
                pid => $pid, server_pids => [], conn => $conn,
                host => "127.0.0.1", port => $port,
            );
        }
        $conn->close;
        push @servers, qq("127.0.0.1:$port$mech");
    }

    my $config = qq({"pools": {"A": {"servers": [) . join(", ", @servers) . qq(]}},)
        . qq( "route": "PoolRoute|A"});
    my ($proxy_pid, $conn);
    for my $attempt (1 .. 5) {
        $proxy_pid = _spawn(
            $python, "-m", "mcrouter_trio", "-p", $proxy_port,
            "--listen-addresses", "127.0.0.1", "--config-str", $config,
            "--enable-flush-cmd", split(' ', $ENV{MCROUTER_TRIO_ARGS} || ""),
        );
        $conn = eval { _connect_when_listening($proxy_port, $proxy_pid, "mcrouter_trio") };
        last if $conn;
        my $error = $@;
        _stop($proxy_pid);
        # A port free_port() chose may be taken before the proxy binds it (by any
        # process's outgoing connection: it is in the ephemeral range): choose again.
        if ($passed_port || $attempt == 5) {
            _stop(@server_pids);
            croak($error);
        }
        $proxy_port = MemcachedTest::free_port();
        $proxy_port = MemcachedTest::free_port() while $taken{$proxy_port}++;
    }
    return Memcached::ProxiedHandle->new(
        pid => $proxy_pid, server_pids => \@server_pids, conn => $conn,
        host => "127.0.0.1", port => $proxy_port,
    );
};

sub _stop {
    my @pids = @_;
    kill 'TERM', @pids;
    waitpid($_, 0) for @pids;
}

package Memcached::ProxiedHandle;
# A Memcached::Handle whose pid is the proxy's (stop() stops the proxy);
# destroying it stops the proxy and its memcached servers.
use parent -norequire, 'Memcached::Handle';

sub DESTROY {
    my $self = shift;
    ProxiedMemcached::_stop($self->{pid}, @{ $self->{server_pids} });
}

1;
