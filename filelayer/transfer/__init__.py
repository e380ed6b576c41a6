"""``filelayer copy SOURCE DEST``: carry conversations between an archive and a database.

Either side is an archive root (a directory) or the URL of a database with one of
Chainlit's schemas: the official one (``postgresql://``,
:mod:`filelayer.transfer.postgres`) or the
one of Chainlit's ``SQLAlchemyDataLayer`` (``sqlite:///``, ``postgresql+asyncpg://``,
:mod:`filelayer.transfer.sqla`). The copy is meant for moving an app from files to
PostgreSQL (or back) without losing anything, and for re-running until both sides agree:

* Every entity keeps its id and its times, so a thread copied twice is one thread.
* Both sides are read into one neutral shape (the archive's own dicts, which hold every
  field Chainlit sends); each destination says how it compares and writes that shape.
* A re-run writes only what is missing or different; identical entities count as
  "unchanged", so a completed copy re-run reports nothing to do. A thread changed in
  the destination since the last copy is left alone (the app now writes there): told by
  content where the destination keeps a record of that copy (a database), by times
  otherwise; and deleted threads, steps and elements are never brought back.
* Each thread is written as a unit (one transaction in PostgreSQL); a failure is
  reported and the copy goes on, so an interrupted copy is finished by running it again.

This module imports neither Chainlit nor asyncpg: the database sides live in their own
modules, imported only when a URL is given, so the rest of the command line keeps
working without the optional packages (SQLite needs none: it is in the standard library).

The package, bottom up: :mod:`~filelayer.transfer.model` (the neutral shape and the
:class:`~filelayer.transfer.model.Endpoint` interface); what the two SQL endpoints share,
:mod:`~filelayer.transfer.stash` (row values and the stash), :mod:`~filelayer.transfer.storage`
(element bytes: the storage client, local files, URLs) and :mod:`~filelayer.transfer.sqlbase`
(connecting, the schema check, the bytes policy); the endpoints,
:mod:`~filelayer.transfer.archive`, :mod:`~filelayer.transfer.postgres` (with ``pgschema``,
``pgrows``, ``pgread``, ``pgwrite``) and :mod:`~filelayer.transfer.sqla` (with ``sqlaschema``,
``sqldb``, ``sqlarows``, ``sqlaread``, ``sqlawrite``); :mod:`~filelayer.transfer.endpoints`
(which one a location names), :mod:`~filelayer.transfer.copier` (the copy) and
:mod:`~filelayer.transfer.command`. An endpoint imports the model and the shared modules,
never the copier nor another endpoint.
"""
