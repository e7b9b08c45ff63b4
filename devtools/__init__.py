"""Development tools, kept in the repository and out of the installed package (the wheel ships
bot/ and cards/ only): the sandbox tenant (``sandbox``), the demo stack (``demo``), the Teams app
package build (``manifest``) and the sample card states (``samples``).

They may import the bot's code; the bot never imports them (tests/unit/test_imports.py). The
``remediation-bot`` commands ``demo``, ``cards dump`` and ``manifest build`` run them from a
development checkout.
"""
