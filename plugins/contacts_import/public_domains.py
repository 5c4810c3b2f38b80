"""Public (free) mail providers, as data.

Colleagues share their company domain, so an address on a team member's
domain is a colleague; but two people on gmail.com have nothing in common.
Team addresses on these domains therefore exclude only themselves.
"""
from __future__ import annotations

PUBLIC_MAIL_DOMAINS: frozenset[str] = frozenset(
    """
    gmail.com googlemail.com
    outlook.com outlook.de outlook.fr hotmail.com hotmail.co.uk hotmail.de hotmail.fr hotmail.it hotmail.es
    live.com live.de live.fr live.co.uk msn.com passport.com
    yahoo.com yahoo.co.uk yahoo.de yahoo.fr yahoo.es yahoo.it yahoo.co.jp yahoo.com.br ymail.com rocketmail.com
    icloud.com me.com mac.com
    aol.com aol.de aim.com
    gmx.net gmx.de gmx.at gmx.ch gmx.com gmx.fr web.de t-online.de freenet.de arcor.de posteo.de mailbox.org
    proton.me protonmail.com protonmail.ch pm.me tutanota.com tutanota.de tuta.io
    zoho.com zohomail.com fastmail.com fastmail.fm hey.com
    yandex.ru yandex.com ya.ru mail.ru inbox.ru list.ru bk.ru rambler.ru
    orange.fr wanadoo.fr free.fr laposte.net sfr.fr
    libero.it virgilio.it tiscali.it
    seznam.cz wp.pl o2.pl onet.pl interia.pl
    qq.com 163.com 126.com sina.com yeah.net
    naver.com daum.net hanmail.net
    rediffmail.com
    btinternet.com sky.com virginmedia.com
    comcast.net verizon.net att.net sbcglobal.net
    mail.com email.com usa.com
    """.split()
)
