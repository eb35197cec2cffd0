"""The gates: one small module per class of hostile input, and every command goes through them.

A security review reads this package, not the commands: a command never opens, writes, parses or connects on
its own. Each class of input that can hurt has exactly one door:

* ``files``   -- input files are opened only when they are regular files, and every file a command reads is
  remembered for the length of the command; output files are refused when they are one of those inputs
  (by device and inode, so a hard link counts), a link, an existing non-regular file or in a missing folder,
  and are written owner-only through a temporary file and a rename.
* ``stored``  -- values read back from a results database: JSON with depth and size bounds (checked before
  parsing), metrics that must be finite numbers, text that is not valid UTF-8 (decoded with replacement by
  every connection the database gate opens); a damaged value is one line naming table, column and row, never
  a traceback.
* ``secrets`` -- API keys and ``Authorization`` text removed from every message before it is printed,
  logged or stored.

Gates that live beside what they guard (each the only place its class is handled): results databases are
opened only by ``store/database.py`` (writing) and ``store/readonly.py`` (reading: read-only, never migrated,
only regular files); network answers are read only by ``engine/http.py``; archives are read
only by ``airgap/bundle.py``; chat templates render only in ``prompting/prompt_format.py``'s sandbox.
``tests/test_gates.py`` scans the source for anything that goes around them and runs every command of the
Click tree against each hostile set its declaration names (``cli/declare.py``).
"""
