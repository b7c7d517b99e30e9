-- ARGV: P, now, key, holder. Gives a concurrency slot back.
return redis.call('ZREM', k('slot', ARGV[3]), ARGV[4])
